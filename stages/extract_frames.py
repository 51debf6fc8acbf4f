"""Stage extract_frames: sample each ingested video under the frame budget, through a persistent frame cache.

Reads raw_dir/manifest.jsonl (ingest) and writes, per item, out_dir/<id>.npy (uint8 (T, H, W, 3) RGB, already
resized) and out_dir/<id>.json (see `frame_meta`); out_dir/index.jsonl lists what was extracted and
out_dir/quarantine.jsonl what failed, with the reason (extracted + quarantined = manifest rows). Readers of
that folder go through stages/video/frames.py read_frames.
Videos follow stages.video.budget.plan_video; JPEG frame folders (tracking) get exactly tracking_frames frames at
round(linspace(0, N-1, tracking_frames)), the GOT-10k box convention of the synthetic generator.

Frames come from stages.video.frame_cache (keyed by the video's sha256 and the exact frame plan, kept outside
out_dir): only videos whose plan changed are decoded again, also after DVC deleted out_dir. Videos are decoded in
parallel worker processes (workers), each with decode_threads decoder threads.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from stages.io import quarantine_record, read_json, read_jsonl, write_json, write_jsonl
from stages.params import ExtractFramesParams, load_params
from stages.sources.store import Store, cache_root, link_or_copy
from stages.video.budget import FramePlan, check_params
from stages.video.extract import decode_cost, decoder_of, work
from stages.video.frame_cache import FrameCache

STAGE = "extract_frames"


def frame_meta(row: dict, plan: FramePlan, p: ExtractFramesParams, key: str) -> dict:
    return {
        "video_id": row["id"], "kind": row["kind"], "sha256": row["sha256"],
        "num_frames": plan.num_frames, "height": plan.height, "width": plan.width,
        "fps": round(plan.sample_fps, 6),  # sampled frames per second of video
        "timestamps": plan.timestamps, "frame_indices": plan.indices,
        "duration": row["duration"], "source_fps": row["fps"],
        "backend": decoder_of(row, p), "cache_key": key,
    }


def run_all(rows: list[dict], p: ExtractFramesParams, root: Path) -> list[tuple[str, object]]:
    """work() for every row, in order of rows; in worker processes when workers != 1."""
    workers = p.workers or os.cpu_count() or 1
    bar = tqdm(total=len(rows), unit="video", desc="extract_frames", disable=not p.progress or not rows)
    results: list = [None] * len(rows)
    with bar:
        if workers == 1 or len(rows) < 2:
            for i, row in enumerate(rows):
                results[i] = work(row, p, str(root))
                bar.update()
            return results
        # workers fork from a clean server process that has imported this module once (decoder threads of this
        # process never reach them, and each worker starts in milliseconds instead of re-importing everything)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["stages.video.extract"])
        biggest_first = sorted(range(len(rows)), key=lambda i: -decode_cost(rows[i]))  # shortens the tail
        with cf.ProcessPoolExecutor(min(workers, len(rows)), mp_context=ctx) as pool:
            futures = {pool.submit(work, rows[i], p, str(root)): i for i in biggest_first}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
    return results


def prune(out: Path, keep: set[str]) -> None:
    """Drop entries of ids no longer in the manifest (only files this stage wrote)."""
    for meta_path in out.glob("*.json"):
        try:
            stale = meta_path.stem not in keep and "cache_key" in read_json(meta_path)
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
    store = Store(cache_root(p.cache_dir))
    cache = FrameCache(store.root)
    with store.lock():
        results = run_all(rows, p, store.root)
        index, bad, redecoded = [], [], []
        for row, (status, value) in zip(rows, results):
            if status == "bad":
                bad.append(quarantine_record(row["id"], row["path"], value, STAGE))
                continue
            key, plan, _, distrust = value
            if distrust:
                redecoded.append(f"{row['id']}: {distrust}")
            link_or_copy(cache.path(key), out / f"{row['id']}.npy")
            meta = frame_meta(row, plan, p, key)
            write_json(out / f"{row['id']}.json", meta)  # after the .npy: a meta file means a complete pair
            index.append({"id": row["id"], **meta})
    prune(out, {r["id"] for r in index})
    write_jsonl(out / "quarantine.jsonl", bad)
    write_jsonl(out / "index.jsonl", index)
    if redecoded:  # said on stderr and counted; the entries were replaced by fresh decodes
        print(f"extract_frames: {len(redecoded)} cached frame entries failed their content check and were decoded "
              f"again: " + "; ".join(redecoded[:5]) + (f"; ... {len(redecoded) - 5} more" if len(redecoded) > 5 else ""),
              file=sys.stderr)
    statuses = [s for s, _ in results]
    return {"seen": len(rows), "extracted": len(index), "decoded": statuses.count("decoded"),
            "reused": statuses.count("cached"), "redecoded": len(redecoded), "quarantined": len(bad),
            "frames": sum(m["num_frames"] for m in index),
            "cpu_s": round(sum(v[2] for s, v in results if s != "bad"), 3)}  # summed over the workers


def main() -> None:
    t0 = time.perf_counter()
    counts = extract_frames(load_params().extract_frames)
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
