"""When each frame of a video file is shown: presentation times from its packets (demux only, no decoding).

Frames are numbered in presentation order (the order a decoder outputs them) and counted from the packets that
decode to a frame: packets with data that the container's edit list keeps (MP4 edit lists flag the others
`discard`; the decoder drops them). Frame k is shown at the k-th smallest packet pts, relative to the first
(a stream starting at pts > 0 still starts at 0 here). Packet pts are used, not the decoder's frame pts: packed
B-frames in AVI (XviD) come out of the decoder with swapped pts, while their packets' pts are the index slots.

A stream is constant-rate (cfr) when every frame lies within CFR_TOLERANCE frame intervals of k / fps; then
times, duration and frame plans stay the fps arithmetic (frame k at k / fps, duration = frames / fps), exactly as
for synthetic videos. Otherwise (variable rate, AVI index entries without data, gaps) the pts are the times and
duration = last frame's time + its display duration (its packet's, else the interval before it); fps is then frames / duration (a mean).
"""
from __future__ import annotations

from dataclasses import dataclass

CFR_TOLERANCE = 0.25  # of one frame interval: container timestamp rounding (Matroska's ms) stays far below


@dataclass(frozen=True)
class Packets:
    """What the demuxer says about the video stream (ticks of time_base)."""

    pts: list  # of packets that decode to a frame, in file order; None where a packet has no pts
    durations: dict  # pts -> packet duration (ticks) where known
    corrupt: int
    last_end: int | None  # largest pts + duration over all packets with data (discarded ones included)


@dataclass(frozen=True)
class StreamTimes:
    times: list[float]  # seconds of each frame (presentation order) after the first frame
    duration: float
    start: float  # the first frame's pts in seconds (0 when unknown)
    fps: float
    cfr: bool

    @property
    def frames(self) -> int:
        return len(self.times)


def demux_packets(container, stream) -> Packets:
    pts, durations, corrupt, last_end = [], {}, 0, None
    for pkt in container.demux(stream):
        if not pkt.size:  # the flush packet at the end; AVI index entries without data never reach us
            continue
        corrupt += bool(pkt.is_corrupt)
        if pkt.pts is not None:
            end = pkt.pts + (pkt.duration or 0)
            last_end = end if last_end is None else max(last_end, end)
        if pkt.is_discard:  # outside the edit list: decoded (it may be a reference) but never output
            continue
        pts.append(pkt.pts)
        if pkt.pts is not None and pkt.duration:
            durations[pkt.pts] = pkt.duration
    return Packets(pts, durations, corrupt, last_end)


def stream_times(packets: Packets, time_base, rate: float) -> StreamTimes:
    """Frame times of the stream (see module doc); rate = the container's nominal frame rate."""
    n = len(packets.pts)
    by_rate = StreamTimes([k / rate for k in range(n)], round(n / rate, 6), 0.0, rate, True)
    if n == 0 or any(t is None for t in packets.pts) or len(set(packets.pts)) != n or time_base is None:
        return by_rate  # no usable pts: count frames at the nominal rate (what a decoder's output order gives)
    ticks = sorted(packets.pts)
    tb = float(time_base)
    start = ticks[0] * tb
    rel = [(t - ticks[0]) * tb for t in ticks]
    if all(abs(t - k / rate) <= CFR_TOLERANCE / rate for k, t in enumerate(rel)):
        return StreamTimes(by_rate.times, by_rate.duration, round(start, 6), rate, True)
    last = packets.durations.get(ticks[-1])
    if last:
        shown = last * tb
    else:  # no packet duration (Matroska often has none): as long as the frame before it (the local rate)
        shown = rel[-1] - rel[-2] if n > 1 else 1 / rate
    duration = round(rel[-1] + shown, 6)
    return StreamTimes(rel, duration, round(start, 6), n / duration, False)


def read_times(path) -> StreamTimes:
    """stream_times of a file's first video stream (one demux pass)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if rate <= 0:
            raise ValueError("unknown frame rate")
        return stream_times(demux_packets(container, stream), stream.time_base, rate)
