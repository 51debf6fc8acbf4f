"""Video decoding: decord (default) or PyAV, plus folders of JPEG frames read as videos.

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


def _pyav_frame_count(container, stream) -> int:
    """Container metadata when present, else count packets (no decoding)."""
    if stream.frames:
        return int(stream.frames)
    return sum(1 for pkt in container.demux(stream) if pkt.size)


def probe_video(path: str | Path) -> VideoInfo:
    """fps, frame count, duration, size and codec of a video file; DecodeError if it is not a usable video."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate or rate <= 0:
                raise DecodeError("unknown frame rate")
            fps = float(rate)
            frames = _pyav_frame_count(container, stream)
            if frames < 1:
                raise DecodeError("no frames")
            ctx = stream.codec_context
            return VideoInfo(fps, frames, round(frames / fps, 6), ctx.width, ctx.height, ctx.name)
    except DecodeError:
        raise
    except Exception as e:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise DecodeError(f"{type(e).__name__}: {e}") from e


def probe_frames(folder: str | Path, fps: float) -> VideoInfo:
    """A JPEG frame folder as a video at the given fps; size from the first frame."""
    files = frame_files(folder)
    if not files:
        raise DecodeError("no JPEG frames")
    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except Exception as e:
        raise DecodeError(f"first frame unreadable: {type(e).__name__}: {e}") from e
    return VideoInfo(float(fps), len(files), round(len(files) / fps, 6), width, height, "jpeg")


def _check_indices(indices: Sequence[int], total: int | None = None) -> list[int]:
    idx = [int(i) for i in indices]
    if not idx:
        raise DecodeError("no frame indices requested")
    if min(idx) < 0 or (total is not None and max(idx) >= total):
        raise DecodeError(f"frame index out of range [0, {total}): {min(idx)}..{max(idx)}")
    return idx


def read_decord(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        idx = _check_indices(indices, len(vr))
        return vr.get_batch(idx).asnumpy()
    except DecodeError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError
        raise DecodeError(f"decord: {type(e).__name__}: {e}") from e


def read_pyav(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Decode in order and keep the wanted frames (faster than seeking for the short clips used here)."""
    import av

    idx = _check_indices(indices)
    wanted, last, got, count = set(idx), max(idx), {}, 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if count in wanted:
                    got[count] = frame.to_ndarray(format="rgb24")
                count += 1
                if count > last:
                    break
    except Exception as e:
        raise DecodeError(f"pyav: {type(e).__name__}: {e}") from e
    if len(got) < len(wanted):
        raise DecodeError(f"pyav: only {count} frames decodable, wanted index {last}")
    return np.stack([got[i] for i in idx])


def read_frame_folder(folder: str | Path, indices: Sequence[int]) -> np.ndarray:
    files = frame_files(folder)
    idx = _check_indices(indices, len(files))
    cache: dict[int, np.ndarray] = {}
    for i in set(idx):
        try:
            with Image.open(files[i]) as im:
                cache[i] = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DecodeError(f"frame {files[i].name}: {type(e).__name__}: {e}") from e
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise DecodeError(f"frames differ in size: {sorted(shapes)}")
    return np.stack([cache[i] for i in idx])


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "decord") -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at `indices` from a video file (backend) or a JPEG frame folder."""
    if Path(path).is_dir():
        return read_frame_folder(path, indices)
    if backend == "decord":
        return read_decord(path, indices)
    if backend == "pyav":
        return read_pyav(path, indices)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
