"""Stage extract_frames: sample each ingested video under the frame budget and cache the frames.

Reads raw_dir/manifest.jsonl (ingest) and writes, per item, out_dir/<id>.npy (uint8 (T, H, W, 3) RGB, already
resized) and out_dir/<id>.json (see `frame_meta`); out_dir/index.jsonl lists what was extracted and
out_dir/quarantine.jsonl what failed, with the reason (extracted + quarantined = manifest rows).
Videos follow stages.video.budget.plan_video; JPEG frame folders (tracking) get exactly tracking_frames frames at
round(linspace(0, N-1, tracking_frames)), the GOT-10k box convention of the synthetic generator.
An entry whose sha256, config_hash and source timing match the existing cache is kept without decoding again.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stages.io import atomic_path, quarantine_record, read_json, read_jsonl, sha256_json, write_json, write_jsonl
from stages.params import ExtractFramesParams, load_params
from stages.video.budget import FramePlan, check_params, plan_sequence, plan_video
from stages.video.decode import DecodeError, read_frames

STAGE = "extract_frames"
# the knobs that change the cached frames (workers and paths do not)
CONFIG_KEYS = ("backend", "fps", "min_frames", "max_frames", "frame_factor", "size_factor", "min_pixels",
               "max_pixels", "total_pixels", "tracking_frames")


def config_hash(p: ExtractFramesParams) -> str:
    return sha256_json({k: getattr(p, k) for k in CONFIG_KEYS})[:16]


def plan_for(row: dict, p: ExtractFramesParams) -> FramePlan:
    if row["kind"] == "frames":
        return plan_sequence(row["frames"], row["fps"], row["height"], row["width"], p)
    return plan_video(row["duration"], row["frames"], row["fps"], row["height"], row["width"], p)


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def frame_meta(row: dict, plan: FramePlan, p: ExtractFramesParams) -> dict:
    return {
        "video_id": row["id"], "kind": row["kind"], "sha256": row["sha256"],
        "num_frames": plan.num_frames, "height": plan.height, "width": plan.width,
        "fps": round(plan.sample_fps, 6),  # sampled frames per second of video
        "timestamps": plan.timestamps, "frame_indices": plan.indices,
        "duration": row["duration"], "source_fps": row["fps"],
        "backend": "jpeg" if row["kind"] == "frames" else p.backend, "config_hash": config_hash(p),
    }


def cached(out: Path, row: dict, p: ExtractFramesParams) -> dict | None:
    meta_path, npy = out / f"{row['id']}.json", out / f"{row['id']}.npy"
    if not (meta_path.exists() and npy.exists()):
        return None
    meta = read_json(meta_path)
    # the same bytes, budget and timing (a frame folder's fps comes from ingest params, not from its bytes)
    same = (meta.get("sha256"), meta.get("config_hash"), meta.get("source_fps"), meta.get("duration")) == (
        row["sha256"], config_hash(p), row["fps"], row["duration"])
    return meta if same else None


def extract_one(row: dict, p: ExtractFramesParams, out: Path) -> dict:
    """Decode, resize and write one item; returns its meta. Raises ValueError/DecodeError/OSError with the reason."""
    if not Path(row["path"]).exists():
        raise FileNotFoundError(f"listed in the manifest but missing: {row['path']}")
    plan = plan_for(row, p)
    frames = read_frames(row["path"], plan.indices, backend=p.backend)
    frames = resize(frames, plan.height, plan.width)
    with atomic_path(out / f"{row['id']}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
    meta = frame_meta(row, plan, p)
    write_json(out / f"{row['id']}.json", meta)  # after the .npy: a meta file means a complete pair
    return meta


def work(row: dict, p: ExtractFramesParams, out: Path) -> tuple[str, dict | str]:
    """('ok'|'reused', meta) or ('bad', reason); runs in a worker process when workers > 1."""
    try:
        meta = cached(out, row, p)
        if meta is not None:
            return "reused", meta
        return "ok", extract_one(row, p, out)
    except (ValueError, DecodeError, OSError) as e:
        return "bad", f"{type(e).__name__}: {e}"


def prune(out: Path, keep: set[str]) -> None:
    """Drop cache entries of ids no longer in the manifest (only files this stage wrote)."""
    for meta_path in out.glob("*.json"):
        try:
            stale = meta_path.stem not in keep and "config_hash" in read_json(meta_path)
        except (OSError, ValueError):
            continue
        if stale:
            (out / f"{meta_path.stem}.npy").unlink(missing_ok=True)
            meta_path.unlink()


def extract_frames(p: ExtractFramesParams) -> dict:
    """Extract every manifest item; write index.jsonl and quarantine.jsonl; return counts."""
    check_params(p)
    rows = read_jsonl(Path(p.raw_dir) / "manifest.jsonl")
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if p.workers > 1:
        ctx = multiprocessing.get_context("spawn")  # decoders hold threads; fork is not safe with them
        with cf.ProcessPoolExecutor(p.workers, mp_context=ctx) as pool:
            results = list(pool.map(work, rows, [p] * len(rows), [out] * len(rows)))
    else:
        results = [work(row, p, out) for row in rows]
    index, bad, reused = [], [], 0
    for row, (status, value) in zip(rows, results):
        if status == "bad":
            bad.append(quarantine_record(row["id"], row["path"], value, STAGE))
        else:
            index.append({"id": row["id"], **value})
            reused += status == "reused"
    prune(out, {r["id"] for r in index})
    write_jsonl(out / "quarantine.jsonl", bad)
    write_jsonl(out / "index.jsonl", index)
    return {"seen": len(rows), "extracted": len(index), "reused": reused, "quarantined": len(bad),
            "frames": sum(m["num_frames"] for m in index)}


def load_frames(frames_dir: str | Path, video_id: str, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """The cached frames (uint8 (T, H, W, 3); memory-mapped by default) and their meta."""
    d = Path(frames_dir)
    meta = read_json(d / f"{video_id}.json")
    frames = np.load(d / f"{video_id}.npy", mmap_mode="r" if mmap else None)
    if frames.shape[0] != meta["num_frames"]:
        raise ValueError(f"{video_id}: {frames.shape[0]} frames cached, meta says {meta['num_frames']}")
    return frames, meta


def main() -> None:
    t0 = time.perf_counter()
    counts = extract_frames(load_params().extract_frames)
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
