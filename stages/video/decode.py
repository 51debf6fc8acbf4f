"""Video decoding: PyAV (default: faster here, see docs/data.md) or decord, plus JPEG frame folders read as videos.

All readers return uint8 RGB arrays of shape (T, H, W, 3) for the requested frame indices, in the requested order
(repeats allowed). Probing always uses PyAV: decord exposes no codec name. Frame i is taken to be shown at
i / fps, and duration = frames / fps, so sampled timestamps never pass the end of the video.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

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

    def as_dict(self) -> dict:
        return asdict(self)


def frame_files(folder: str | Path) -> list[Path]:
    """The frames of a frame folder: its *.jpg / *.jpeg files in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _demux_counts(container, stream) -> tuple[int, int]:
    """(packets with data, packets flagged corrupt) of the video stream, without decoding."""
    n = bad = 0
    for pkt in container.demux(stream):
        if pkt.size:
            n += 1
            bad += bool(pkt.is_corrupt)
    return n, bad


def probe_video(path: str | Path) -> VideoInfo:
    """fps, frame count, duration, size and codec of a video file; DecodeError if it is not a usable video.

    Demuxes every packet (cheap: no decoding) so that a file cut short is caught here: its header promises more
    frames than it holds. A container without a frame count (Matroska, WebM) gets the packet count.
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
            fps, declared = float(rate), int(stream.frames or 0)
            width, height, codec = ctx.width, ctx.height, ctx.name
            frames, corrupt = _demux_counts(container, stream)
    except DecodeError:
        raise
    except Exception as e:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise DecodeError(f"{type(e).__name__}: {e}") from e
    if frames < 1:
        raise DecodeError("no frames")
    if declared and frames < declared:
        raise DecodeError(f"truncated: the header declares {declared} frames, the file holds {frames}")
    if corrupt:
        raise DecodeError(f"{corrupt} corrupt packets")
    if width < 1 or height < 1:
        raise DecodeError(f"no frame size ({width}x{height})")
    return VideoInfo(fps, frames, round(frames / fps, 6), width, height, codec)


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


def read_decord(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None,
                threads: int = 1) -> np.ndarray:
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
        idx = _check_indices(indices, len(vr))
        frames = vr.get_batch(idx).asnumpy()
    except DecodeError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError
        raise DecodeError(f"decord: {type(e).__name__}: {e}") from e
    return resize_rgb(frames, size)


class _NoTimestamps(Exception):
    """Packets or frames without usable pts: fall back to counting frames in output order."""


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.height, frame.width) == tuple(size):
        return frame.to_ndarray(format="rgb24")
    # one swscale pass converts YUV to RGB and resizes (bicubic, filter widened when shrinking)
    return frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="BICUBIC").to_ndarray()


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
    """Every packet's pts in presentation order (first demux pass; no decoding)."""
    container, stream = _open_video(path, threads)
    with container:
        pts = [pkt.pts for pkt in container.demux(stream) if pkt.size]
    if any(t is None for t in pts) or len(set(pts)) != len(pts):
        raise _NoTimestamps
    return sorted(pts)


def _read_pyav_skipping(path, idx: list[int], size, threads: int) -> dict[int, np.ndarray]:
    """Decode only what the wanted frames need: H.264 non-reference pictures that are not wanted are skipped
    (stages.video.h264); a frame's index is the rank of its pts among all packets."""
    from stages.video import h264

    rank = {t: i for i, t in enumerate(_presentation_order(path, threads))}
    wanted, got = set(idx), {}
    container, stream = _open_video(path, threads)
    with container:
        ctx = stream.codec_context
        length_size = h264.nal_length_size(ctx.extradata) if ctx.name == "h264" else None
        skippable = ctx.name == "h264"

        def keep(frames) -> bool:
            for frame in frames:
                i = rank.get(frame.pts)
                if i is None:
                    raise _NoTimestamps
                if i in wanted and i not in got:
                    got[i] = _to_rgb(frame, size)
            return len(got) == len(wanted)

        for pkt in container.demux(stream):
            if not pkt.size:
                continue
            if skippable and rank[pkt.pts] not in wanted and h264.droppable(bytes(pkt), length_size):
                continue
            if keep(ctx.decode(pkt)):
                return got
        keep(ctx.decode(None))  # drain frames the decoder still holds for reordering
    return got


def _read_pyav_counting(path, idx: list[int], size, threads: int) -> dict[int, np.ndarray]:
    """Decode every frame up to the last wanted one, counting frames in output (presentation) order."""
    wanted, last, got, count = set(idx), max(idx), {}, 0
    container, stream = _open_video(path, threads)
    with container:
        for frame in container.decode(stream):
            if count in wanted:
                got[count] = _to_rgb(frame, size)
            count += 1
            if count > last:
                break
    return got


def read_pyav(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None,
              threads: int = 1) -> np.ndarray:
    """Frames at `indices` (presentation order), resized in the same pass when size = (height, width) is given.

    Decodes forward from the start (sparse samples of long-GOP video gain little from seeking) but skips the
    pictures nothing depends on; falls back to counting decoded frames when timestamps are missing.
    """
    idx = _check_indices(indices)
    try:
        try:
            got = _read_pyav_skipping(path, idx, size, threads)
        except _NoTimestamps:
            got = _read_pyav_counting(path, idx, size, threads)
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
                size: tuple[int, int] | None = None, threads: int = 1) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at `indices` from a video file (backend) or a JPEG frame folder.

    size = (height, width) resizes (bicubic); threads is the decoder's thread count (0 = FFmpeg's choice).
    """
    if Path(path).is_dir():
        return read_frame_folder(path, indices, size)
    if backend == "decord":
        return read_decord(path, indices, size, threads)
    if backend == "pyav":
        return read_pyav(path, indices, size, threads)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
