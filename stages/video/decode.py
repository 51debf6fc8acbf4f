"""Video decoding: PyAV (default: faster here, see docs/data.md) or decord, plus JPEG frame folders read as videos.

All readers return uint8 RGB arrays of shape (T, H, W, 3) for the requested frame indices, in the requested order
(repeats allowed), turned upright by the stream's display matrix. Probing always uses PyAV: decord exposes no
codec name. Frame i is the i-th frame in presentation order; when it is shown is stages.video.timing's business.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from stages.video import timing

BACKENDS = ("decord", "pyav")
FRAME_SUFFIXES = (".jpg", ".jpeg")


class DecodeError(RuntimeError):
    """The input cannot be decoded as asked; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int
    duration: float
    width: int
    height: int
    codec: str
    start: float = 0.0  # the first frame's presentation time (s); times elsewhere count from it
    rotation: int = 0  # counter-clockwise degrees applied to every decoded frame (display matrix)
    cfr: bool = True  # constant rate: frame k at k / fps; else frame times come from pts (stages.video.timing)

    def as_dict(self) -> dict:
        return asdict(self)


def frame_files(folder: str | Path) -> list[Path]:
    """The frames of a frame folder: its *.jpg / *.jpeg files in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _truncated(declared: int, held: int, packets, stream) -> bool:
    """Fewer packets than the header declares, and they stop before its end. AVI indexes may repeat a frame with
    entries that hold no data (declared 444, 68 with data), yet the last real one still reaches the end."""
    if not declared or held >= declared:
        return False
    end, dur = packets.last_end, stream.duration
    if end is None or not dur or dur <= 0:
        return True
    return end - (stream.start_time or 0) < dur - dur / declared  # stops over a frame before the declared end


def _rotation(container, stream) -> int:
    """Counter-clockwise degrees the first frame must be turned to be shown upright (display matrix)."""
    for frame in container.decode(stream):
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return 0


def probe_video(path: str | Path) -> VideoInfo:
    """fps, frame count, duration, displayed size and codec of a video file; DecodeError if it is not usable.

    Demuxes every packet (cheap: no decoding) so that a file cut short is caught here (its header promises more
    frames than it holds), and so that times come from presentation timestamps (stages.video.timing): frames are
    those packets that decode to a frame, duration and fps are the real ones for variable-rate video. Width and
    height are the displayed ones (swapped for a 90/270 degree display matrix, see `rotation`).
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate or rate <= 0:
                raise DecodeError("unknown frame rate")
            ctx = stream.codec_context
            if ctx is None:  # FFmpeg knows no decoder for the stream's codec (unknown or unsupported fourcc)
                raise DecodeError("no decoder for the video stream's codec (unknown or unsupported format)")
            declared = int(stream.frames or 0)
            width, height, codec = ctx.width, ctx.height, ctx.name
            packets = timing.demux_packets(container, stream)
            times = timing.stream_times(packets, stream.time_base, float(rate))
            frames = times.frames
            if frames < 1:
                raise DecodeError("no frames")
            if _truncated(declared, frames, packets, stream):
                raise DecodeError(f"truncated: the header declares {declared} frames, the file holds {frames}")
            if packets.corrupt:
                raise DecodeError(f"{packets.corrupt} corrupt packets")
            if width < 1 or height < 1:
                raise DecodeError(f"no frame size ({width}x{height})")
        with av.open(str(path)) as container:
            rotation = _rotation(container, container.streams.video[0])
    except DecodeError:
        raise
    except Exception as e:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise DecodeError(f"{type(e).__name__}: {e}") from e
    if rotation % 180 == 90:
        width, height = height, width
    return VideoInfo(times.fps, frames, times.duration, width, height, codec, times.start, rotation, times.cfr)


def probe_frame_files(paths: Sequence[Path], names: Sequence[str], fps: float) -> VideoInfo:
    """A sequence of JPEG frames as a video at the given fps: every frame must be a JPEG of one size (headers
    only), and the first and last frames must decode. DecodeError names the first bad frame."""
    if not paths:
        raise DecodeError("no JPEG frames")
    sizes: dict[tuple[int, int], str] = {}
    for path, name in zip(paths, names):
        try:
            with Image.open(path) as im:
                if im.format != "JPEG":
                    raise DecodeError(f"frame {name} is not a JPEG ({im.format})")
                sizes.setdefault(im.size, name)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"frame {name}: {type(e).__name__}: {e}") from e
    if len(sizes) > 1:
        (a, first), (b, other) = list(sizes.items())[:2]
        raise DecodeError(f"frames differ in size: {first} is {a[0]}x{a[1]}, {other} is {b[0]}x{b[1]}")
    for path, name in {paths[0]: names[0], paths[-1]: names[-1]}.items():
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as e:
            raise DecodeError(f"frame {name}: {type(e).__name__}: {e}") from e
    width, height = next(iter(sizes))
    return VideoInfo(float(fps), len(paths), round(len(paths) / fps, 6), width, height, "jpeg")


def probe_frames(folder: str | Path, fps: float) -> VideoInfo:
    """A JPEG frame folder as a video at the given fps (see probe_frame_files)."""
    files = frame_files(folder)
    return probe_frame_files(files, [f.name for f in files], fps)


def _check_indices(indices: Sequence[int], total: int | None = None) -> list[int]:
    idx = [int(i) for i in indices]
    if not idx:
        raise DecodeError("no frame indices requested")
    if min(idx) < 0 or (total is not None and max(idx) >= total):
        raise DecodeError(f"frame index out of range [0, {total}): {min(idx)}..{max(idx)}")
    return idx


def resize_rgb(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Bicubic (antialiased) resize of uint8 (T, H, W, 3) frames to size = (height, width); None keeps them."""
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])


# mean |difference| (0-255) allowed between decord's frame and PyAV's: on the corpus a right frame differs by 0.0
# (same FFmpeg conversion), a neighbouring frame of a static camera (vtest.avi) by as little as 1.3
DECORD_TOLERANCE = 0.5


def _check_decord(path, frames: np.ndarray, idx: list[int], count: int) -> None:
    """decord counts and seeks frames its own way: on real files it returned other frames than a full decode
    (XviD and MPEG-2 B-frames, edit lists), and differently from one call to the next on the same reader. So the
    frames it returned are compared, every one, with PyAV's (decoded frame by frame, one held at a time); a file
    where they differ, or where the frame counts differ, is refused with the reason."""
    ours = timing.read_times(path).frames
    if count != ours:
        raise DecodeError(f"decord counts {count} frames, a full decode gives {ours}; use backend pyav")
    where: dict[int, list[int]] = {}
    for k, i in enumerate(idx):
        where.setdefault(i, []).append(k)
    for i, ref in _each_frame(path, idx, None, 1, ours):
        for k in where[i]:
            a = frames[k]
            if a.shape != ref.shape:
                raise DecodeError(f"decord frame {i} is {a.shape[1]}x{a.shape[0]}, displayed {ref.shape[1]}x"
                                  f"{ref.shape[0]} (display matrix ignored); use backend pyav")
            diff = float(np.abs(a.astype(np.int16) - ref).mean())
            if diff > DECORD_TOLERANCE:
                raise DecodeError(f"decord frame {i} differs from a full decode's (mean |diff| {diff:.1f}); "
                                  f"use backend pyav")


def read_decord(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None,
                threads: int = 1) -> np.ndarray:
    """decord's frames, once _check_decord has found every one equal to PyAV's (so decord costs a PyAV decode
    more; it stays for cross-checking, pyav is the default)."""
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
        idx = _check_indices(indices, len(vr))
        frames = vr.get_batch(idx).asnumpy()
        _check_decord(path, frames, idx, len(vr))
    except DecodeError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError
        raise DecodeError(f"decord: {type(e).__name__}: {e}") from e
    return resize_rgb(frames, size)


class _NoTimestamps(Exception):
    """Packets or frames without usable pts: fall back to counting frames in output order."""


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """RGB of a decoded frame, resized to size = (height, width) as displayed, turned upright."""
    turns = int(round(getattr(frame, "rotation", 0) or 0)) % 360 // 90
    if size is not None and turns % 2:
        size = (size[1], size[0])  # resize in the coded orientation, then turn
    if size is None or (frame.height, frame.width) == tuple(size):
        rgb = frame.to_ndarray(format="rgb24")
    else:  # one swscale pass converts YUV to RGB and resizes (bicubic, filter widened when shrinking)
        rgb = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="BICUBIC").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _open_video(path, threads: int):
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise DecodeError("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise DecodeError("no decoder for the video stream's codec (unknown or unsupported format)")
    stream.codec_context.thread_count = threads
    if threads != 1:
        stream.thread_type = "AUTO"
    return container, stream


def _presentation_order(path, threads: int) -> list:
    """The pts of every packet that decodes to a frame, in presentation order (first demux pass; no decoding)."""
    container, stream = _open_video(path, threads)
    with container:
        pts = timing.demux_packets(container, stream).pts
    if any(t is None for t in pts) or len(set(pts)) != len(pts):
        raise _NoTimestamps
    return sorted(pts)


def _read_pyav_skipping(path, idx: list[int], size, threads: int) -> dict[int, np.ndarray]:
    """Decode only what the wanted frames need: H.264 non-reference pictures that are not wanted are skipped
    (stages.video.h264); a frame's index is the rank of its pts among the packets that decode to a frame. Frames
    must come out in rising pts, each one a packet's, else _NoTimestamps (the caller then decodes everything)."""
    from stages.video import h264

    rank = {t: i for i, t in enumerate(_presentation_order(path, threads))}
    wanted, got, last = set(idx), {}, [-1]
    container, stream = _open_video(path, threads)
    with container:
        ctx = stream.codec_context
        length_size = h264.nal_length_size(ctx.extradata)

        def keep(frames) -> bool:
            for frame in frames:
                i = rank.get(frame.pts)
                if i is None or i <= last[0]:
                    raise _NoTimestamps
                last[0] = i
                if i in wanted:
                    got[i] = _to_rgb(frame, size)
            return len(got) == len(wanted)

        for pkt in container.demux(stream):
            if not pkt.size:
                continue
            if rank.get(pkt.pts) not in wanted and h264.droppable(bytes(pkt), length_size):
                continue
            if keep(ctx.decode(pkt)):
                return got
        keep(ctx.decode(None))  # drain frames the decoder still holds for reordering
    return got


SKIP_FORMATS = ("mov", "matroska")  # demuxer names (prefixes) whose packet pts are presentation times


def _skipping_proven(path) -> bool:
    """H.264 in MP4/MOV or Matroska/WebM: the streams the skipping decoder was checked on bit for bit."""
    container, stream = _open_video(path, 1)
    with container:
        return stream.codec_context.name == "h264" and container.format.name.startswith(SKIP_FORMATS)


def _each_frame(path, idx: list[int], size, threads: int, total: int | None = None):
    """(index, RGB) of each wanted frame, decoding every frame up to the last wanted one and counting them in
    output (presentation) order; one frame is held at a time. With `total` (frames the packets hold, whose times
    the plan used) a decoder that gives more frames is an error: its frames would not be the ones planned (fewer
    frames show as a missing last frame, which every plan holds)."""
    wanted, last, count = set(idx), max(idx), 0
    stop = None if total is not None and last >= total - 1 else last  # the whole file is decoded anyway: count all
    container, stream = _open_video(path, threads)
    with container:
        for frame in container.decode(stream):
            if total is not None and count >= total:
                raise DecodeError(f"the decoder gives more frames than the {total} the file's packets hold; "
                                  f"frame times unknown")
            if count in wanted:
                yield count, _to_rgb(frame, size)
            count += 1
            if stop is not None and count > stop:
                break


def _read_pyav_counting(path, idx: list[int], size, threads: int, total=None) -> dict[int, np.ndarray]:
    return dict(_each_frame(path, idx, size, threads, total))


def read_pyav(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None,
              threads: int = 1, total: int | None = None) -> np.ndarray:
    """Frames at `indices` (presentation order), resized in the same pass when size = (height, width) is given.

    Decodes forward from the start (sparse samples of long-GOP video gain little from seeking). Only where skipping
    is proven exact (H.264 in a container with presentation timestamps: MP4, Matroska) are the pictures nothing
    depends on left undecoded; everything else (other codecs, AVI's packed B-frames, missing timestamps) is
    decoded frame by frame and counted in output order, which is what a full decode gives.
    """
    idx = _check_indices(indices)
    try:
        got = None
        if _skipping_proven(path):
            try:
                got = _read_pyav_skipping(path, idx, size, threads)
            except _NoTimestamps:
                pass
        if got is None:
            got = _read_pyav_counting(path, idx, size, threads, total)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"pyav: {type(e).__name__}: {e}") from e
    missing = sorted(set(idx) - set(got))
    if missing:
        raise DecodeError(f"pyav: frames {missing[:5]} not decodable (video has fewer frames or is damaged)")
    return np.stack([got[i] for i in idx])


def _read_jpeg(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as im:
        if size is not None:
            im.draft("RGB", (size[1], size[0]))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that still covers size
        rgb = im.convert("RGB")
        if size is not None and rgb.size != (size[1], size[0]):
            rgb = rgb.resize((size[1], size[0]), Image.BICUBIC)
        return np.asarray(rgb)


def read_frame_folder(folder: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
    files = frame_files(folder)
    idx = _check_indices(indices, len(files))
    cache: dict[int, np.ndarray] = {}
    for i in sorted(set(idx)):
        try:
            cache[i] = _read_jpeg(files[i], size)
        except Exception as e:
            raise DecodeError(f"frame {files[i].name}: {type(e).__name__}: {e}") from e
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise DecodeError(f"frames differ in size: {sorted(shapes)}")
    return np.stack([cache[i] for i in idx])


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "pyav",
                size: tuple[int, int] | None = None, threads: int = 1, total: int | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at `indices` from a video file (backend) or a JPEG frame folder.

    size = (height, width) resizes (bicubic); threads is the decoder's thread count (0 = FFmpeg's choice); total =
    the video's frame count as probed (checked against what the frame-by-frame decoder gives).
    """
    if Path(path).is_dir():
        return read_frame_folder(path, indices, size)
    if backend == "decord":
        return read_decord(path, indices, size, threads)
    if backend == "pyav":
        return read_pyav(path, indices, size, threads, total)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
