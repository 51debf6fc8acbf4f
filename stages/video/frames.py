"""The frame-cache format, read in one place.

A cached clip is <name>.npy, uint8 (T, H, W, 3) RGB frames already sampled and resized, and beside it <name>.json,
the meta stage extract_frames writes (stages/extract_frames.py frame_meta: timestamps, fps, num_frames, ...).
Keyed cache entries (stages/video/frame_cache.py) are the same .npy without the meta. Every reader of cached
frames - extract_frames' checks, the model inputs of training, evaluation and SFT, the recipes - goes through
read_cached, so a file cut short or a meta that does not match its frames fails the same way everywhere, naming
the file and the item that uses it.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np


class FramesError(ValueError):
    """Cached frames that cannot be used; the message names the file and, when known, the item; `reason` is the
    bare cause (for callers that say it their own way)."""

    reason = ""


class Frames(NamedTuple):
    array: np.ndarray  # uint8 (T, H, W, 3); memory-mapped unless read with mmap=False
    times: list[float] | None  # seconds of each frame; None when unknown (then frame i sits at i / fps)
    meta: dict | None  # the sidecar as written; None when not read or not there


def read_cached(path: str | Path, item: str | None = None, *, meta: bool = True, mmap: bool = True) -> Frames:
    """The frames at `path` (.npy) and, with `meta`, their sidecar (.json beside it) and times from it.

    A missing sidecar gives meta and times None (arrays saved by hand, keyed cache entries). A frames file that is
    missing, cut short (numpy's "mmap length is greater than file size") or not a uint8 (T, H, W, 3) array, a
    sidecar that is not JSON, or one whose frame count differs from the array's raises FramesError naming the file
    and `item` (e.g. "sample 'tg-3'", or a video id)."""
    path = str(path)
    try:
        array = _open_mmap(path, *_identity(path)) if mmap else np.load(path)
    except (OSError, ValueError, EOFError) as e:
        raise _unusable(path, item, f"{type(e).__name__}: {e}") from e
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise _unusable(path, item, f"holds {array.dtype} {array.shape}, not uint8 (T, H, W, 3)")
    if not meta:
        return Frames(array, None, None)
    side = _read_meta(path, item)
    if side is None:
        return Frames(array, None, None)
    n = int(array.shape[0])
    if side.get("num_frames", n) != n:
        raise _unusable(path, item, f"{n} frames cached, meta says {side['num_frames']}")
    stamps = side.get("timestamps")
    if stamps and len(stamps) != n:
        raise _unusable(path, item, f"{n} frames cached, meta has {len(stamps)} timestamps")
    return Frames(array, [float(t) for t in stamps] if stamps else None, side)


def _identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _open_mmap(path: str, ino: int, size: int, mtime_ns: int) -> np.ndarray:
    """Memory maps stay open between reads of one file (a training step re-reads its clips); keyed by the file's
    identity too, so a file replaced or rewritten (extract_frames again) is opened afresh."""
    return np.load(path, mmap_mode="r")


def _read_meta(path: str, item: str | None) -> dict | None:
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise _unusable(path, item, f"meta {Path(path).with_suffix('.json').name}: {type(e).__name__}: {e}") from e


def _unusable(path: str, item: str | None, reason: str) -> FramesError:
    who = f"{item}: " if item is not None else ""
    error = FramesError(f"{who}frames file {path} unusable ({reason}); run extract_frames again "
                        f"(dvc repro extract_frames)")
    error.reason = reason
    return error
