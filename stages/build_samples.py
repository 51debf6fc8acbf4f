"""Stage build_samples: annotations + frame cache -> data/samples/{train,eval}.jsonl, one row per task sample.

Split by video (no video in both splits), seeded; per-task train caps and mixing weights; every annotation
that cannot be used is written to quarantine.jsonl with its reason (each task module's load_annotations validates
each item; here: duplicate ids, videos missing from the frame cache, what a task's bind_frames hook refuses, e.g.
tracking frames != boxes, prompts longer than max_prompt_chars). Counts reconcile and are checked before anything
is written (stats.json):
seen = quarantined + train_unique + eval + dropped_by_cap + dropped_by_weight
where seen counts every annotation item read (a file that cannot be read at all counts as one quarantined item)
and train counts rows after the weights (a weight above 1 repeats rows).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path

from stages import tasks as task_registry
from stages.io import quarantine_record, write_json, write_jsonl
from stages.params import BuildSamplesParams, load_params


def frame_index(frames_dir: str) -> dict[str, dict]:
    """video_id -> frame meta (the .json written next to each cached .npy)."""
    index = {}
    for meta_path in Path(frames_dir).glob("*.json"):
        if meta_path.name in ("index.json", "summary.json"):
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "video_id" in meta and (meta_path.with_suffix(".npy")).exists():
            index[meta["video_id"]] = meta
    return index


def split_videos(groups: dict[frozenset, list[str]], eval_fraction: float, seed: int) -> set[str]:
    """Eval video ids: within each group of videos serving the same tasks, a seeded fraction (at least one
    when the group has two or more videos), so every task gets held-out samples."""
    held = set()
    for key in sorted(groups, key=lambda k: sorted(k)):
        vids = sorted(groups[key])
        random.Random(f"{seed}:{','.join(sorted(key))}").shuffle(vids)
        n = round(len(vids) * eval_fraction)
        if eval_fraction > 0 and len(vids) >= 2:
            n = max(1, min(n, len(vids) - 1))
        held.update(vids[:n])
    return held


def apply_weights(rows: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """weight 1 keeps rows; w > 1 repeats rows (round(n*w) in all), w < 1 subsamples; seeded."""
    if weight == 1.0 or not rows:
        return rows
    target = max(0, round(len(rows) * weight))
    if target <= len(rows):
        return rng.sample(rows, target)
    return rows * (target // len(rows)) + rng.sample(rows, target % len(rows))


def duration_mismatch(sample: dict, meta: dict, p: BuildSamplesParams) -> str | None:
    """Why an annotation's video duration cannot be the measured one's, or None (tasks without a duration)."""
    said = sample["problem"].get("duration")
    if said is None or meta.get("kind") != "video":
        return None
    measured = float(meta["duration"])
    tol = max(p.duration_tolerance * measured, p.duration_tolerance_s)
    if abs(said - measured) <= tol:
        return None
    return (f"annotation says video {sample['video_id']!r} lasts {said:g} s, measured {measured:g} s: off by "
            f"{abs(said - measured):.2f} s, more than {tol:.2f} s (build_samples.duration_tolerance="
            f"{p.duration_tolerance:g} x measured, at least duration_tolerance_s={p.duration_tolerance_s:g})")


def frames_refusal(task: str, sample: dict, meta: dict) -> str | None:
    """Why the task's bind_frames hook refuses the sample with its video's frames, or None (it may add fields)."""
    bind = getattr(task_registry.get_task(task), "bind_frames", None)
    if bind is None:
        return None
    try:
        sample.update(bind(sample, meta))
    except ValueError as e:
        return str(e)
    return None


def load_all(p: BuildSamplesParams, frames: dict[str, dict]) -> tuple[list[dict], list[dict], int]:
    """(usable samples with their frame meta, quarantine records, items seen) over every task's annotations."""
    quarantine, loaded, seen_ids, seen = [], [], set(), 0

    def reject(item_id, source, reason):
        quarantine.append(quarantine_record(item_id, source, reason, "build_samples"))

    for task, path in sorted(p.annotations.items()):
        if not path:
            continue
        if task not in task_registry.TASKS:
            raise ValueError(f"build_samples.annotations: unknown task {task!r}")
        try:
            samples, rejected = task_registry.load_annotations(task, path, p.interval_policy)
        except (OSError, ValueError) as e:
            seen += 1
            reject(path, path, f"annotation file unusable: {e}")
            continue
        seen += len(samples) + len(rejected)
        for r in rejected:
            reject(r["id"], r["source"], r["reason"])
        for s in samples:
            s["source"] = path
            key = (task, s["id"])
            meta = frames.get(s["video_id"])
            if key in seen_ids:
                reject(s["id"], path, f"duplicate {task} sample id")
            elif meta is None:
                reject(s["id"], path, f"video {s['video_id']!r} missing from the frame cache (not ingested, or "
                                      f"quarantined by ingest or extract_frames)")
            elif why := duration_mismatch(s, meta, p):
                reject(s["id"], path, why)
            elif why := frames_refusal(task, s, meta):
                reject(s["id"], path, why)
            elif len(prompt := task_registry.render_prompt(task, s["problem"], think=p.think,
                                                           prompt_dir=p.prompt_dir)) > p.max_prompt_chars:
                reject(s["id"], path, f"prompt of {len(prompt)} characters exceeds build_samples.max_prompt_chars="
                                      f"{p.max_prompt_chars}")
            else:
                s["meta"], s["prompt"] = meta, prompt
                loaded.append(s)
            seen_ids.add(key)
    return loaded, quarantine, seen


def build(p: BuildSamplesParams, frames_dir: str) -> dict:
    frames = frame_index(frames_dir)
    loaded, quarantine, seen = load_all(p, frames)

    groups: dict[frozenset, set] = defaultdict(set)
    tasks_of_video: dict[str, set] = defaultdict(set)
    for s in loaded:
        tasks_of_video[s["video_id"]].add(s["task"])
    for vid, ts in tasks_of_video.items():
        groups[frozenset(ts)].add(vid)
    held = split_videos({k: list(v) for k, v in groups.items()}, p.eval_fraction, p.seed)

    train, evals = defaultdict(list), defaultdict(list)
    for s in sorted(loaded, key=lambda s: (s["task"], s["id"])):
        meta = s.pop("meta")
        row = {
            "id": s["id"], "task": s["task"], "video_id": s["video_id"],
            "frames": str(Path(frames_dir) / f"{s['video_id']}.npy"),
            "fps": meta["fps"], "num_frames": meta["num_frames"],
            "frame_times": meta.get("timestamps"),  # seconds per frame: the model's inputs read them from here
            "problem": s["problem"], "solution": s["solution"],
            "prompt": s.pop("prompt"),
        }
        (evals if s["video_id"] in held else train)[s["task"]].append(row)

    rng = random.Random(p.seed)
    dropped_by_cap, dropped_by_weight, train_rows = Counter(), Counter(), []
    for task in sorted(train):
        rows = train[task]
        cap = p.max_per_task.get(task)
        if cap is not None and len(rows) > cap:
            dropped_by_cap[task] = len(rows) - cap
            rows = rng.sample(rows, cap)
        weighted = apply_weights(rows, float(p.weights.get(task, 1.0)), rng)
        dropped_by_weight[task] = len(rows) - len({r["id"] for r in weighted})
        train_rows += weighted
    rng.shuffle(train_rows)
    eval_rows = [r for t in sorted(evals) for r in evals[t]]

    train_unique = len({(r["task"], r["id"]) for r in train_rows})
    stats = {
        "seen": seen,
        "quarantined": len(quarantine),
        "loaded": len(loaded),
        "train_unique": train_unique,
        "dropped_by_cap": dict(dropped_by_cap),
        "dropped_by_weight": {t: n for t, n in dropped_by_weight.items() if n},
        "train": dict(Counter(r["task"] for r in train_rows)),
        "eval": dict(Counter(r["task"] for r in eval_rows)),
        "train_videos": len({r["video_id"] for r in train_rows}),
        "eval_videos": len({r["video_id"] for r in eval_rows}),
        "fingerprint": hashlib.sha256(
            "".join(sorted(r["id"] for r in train_rows + eval_rows)).encode()).hexdigest()[:16],
    }
    accounted = (len(quarantine) + train_unique + len(eval_rows) + sum(dropped_by_cap.values())
                 + sum(dropped_by_weight.values()))
    if accounted != seen:  # a bug here must not produce a silently incomplete dataset
        raise RuntimeError(f"build_samples counts do not reconcile: seen {seen}, accounted for {accounted}: {stats}")

    out = Path(p.out_dir)
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "eval.jsonl", eval_rows)
    write_jsonl(out / "quarantine.jsonl", quarantine)
    write_json(out / "stats.json", stats)
    return stats


def main() -> None:
    params = load_params()
    stats = build(params.build_samples, params.extract_frames.out_dir)
    print(f"build_samples: seen {stats['seen']} train {stats['train']} eval {stats['eval']} "
          f"quarantined {stats['quarantined']}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
