"""One manifest row -> its frames in the frame cache: the per-video core of stage extract_frames.

Kept apart from the stage so that worker processes import only this (stages.extract_frames preloads it in the
forkserver from which the workers fork).
"""
from __future__ import annotations

import time
from pathlib import Path

from stages.params import ExtractFramesParams
from stages.video.budget import FramePlan, plan_sequence, plan_video
from stages.video.decode import DecodeError, read_frames
from stages.video.frame_cache import FrameCache, frame_key
from stages.video.timing import read_times


def plan_for(row: dict, p: ExtractFramesParams) -> FramePlan:
    if row["kind"] == "frames":
        return plan_sequence(row["frames"], row["fps"], row["height"], row["width"], p)
    times = None if row.get("cfr", True) else read_times(row["path"]).times  # variable rate: one demux pass
    return plan_video(row["duration"], row["frames"], row["fps"], row["height"], row["width"], p, times)


def decoder_of(row: dict, p: ExtractFramesParams) -> str:
    return "jpeg" if row["kind"] == "frames" else p.backend


UNCHANGED_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm")


def key_revision(row: dict, p: ExtractFramesParams) -> int:
    """2 where decoding changed in issue 13 (frames turned by the display matrix; only H.264 in MP4/Matroska
    decoded sparsely; decord checked against PyAV), so no frames cached before are reused there; 1 (the old
    keys) for upright H.264 MP4/Matroska with PyAV and for frame folders, whose frames did not change."""
    if row["kind"] == "frames":
        return 1
    same = (p.backend == "pyav" and not row.get("rotation") and row.get("codec") == "h264"
            and Path(row["path"]).suffix.lower() in UNCHANGED_SUFFIXES)
    return 1 if same else 2


def work(row: dict, p: ExtractFramesParams, root: str) -> tuple[str, object]:
    """('decoded'|'cached', (key, plan, cpu seconds, why decoded again or None)) or ('bad', reason); runs in a
    worker process when workers > 1. A cache entry that fails its content check is decoded again (the reason says
    why), never used."""
    cpu = time.process_time()
    try:
        if not Path(row["path"]).exists():
            raise FileNotFoundError(f"listed in the manifest but missing: {row['path']}")
        plan = plan_for(row, p)
        key = frame_key(row["sha256"], plan, decoder_of(row, p), key_revision(row, p))
        cache = FrameCache(root)
        hit, distrust = cache.check(key, plan)
        if hit is not None:
            return "cached", (key, plan, time.process_time() - cpu, None)
        frames = read_frames(row["path"], plan.indices, backend=p.backend, size=(plan.height, plan.width),
                             threads=p.decode_threads, total=row["frames"] if row["kind"] == "video" else None)
        if frames.shape != (plan.num_frames, plan.height, plan.width, 3):
            raise DecodeError(f"decoded {frames.shape}, planned {(plan.num_frames, plan.height, plan.width, 3)}")
        cache.put(key, frames)
        return "decoded", (key, plan, time.process_time() - cpu, distrust)
    except (ValueError, DecodeError, OSError) as e:
        return "bad", f"{type(e).__name__}: {e}"


def decode_cost(row: dict) -> float:
    """Relative decoding work of a manifest row: pixels of every source frame (decoding is sequential)."""
    return float(row.get("frames", 1)) * row.get("width", 1) * row.get("height", 1)
