"""Do a model's answers depend on the video? The same prompts answered with another sample's frames.

The shuffled line (stages/blind.shuffled_line) moves answers between samples, so it changes the prompt as well
as the video: a model that answers one letter per question type (multiple-choice "how many objects" always A,
"which direction" always C) scores well above its shuffled range without looking at a pixel. Here only the
frames move: each held-out row keeps its prompt and gold answer and is given the frames of another video of its
task with the same frame layout (fps, frame count, frame times), so durations and timestamps in the prompt stay
true. Scored against the row's own gold, `own - other` per sample; its paired bootstrap interval says whether
the answers use the video (lo > 0), or not measurably (the interval holds 0).

Videos are matched as a seeded derangement of whole videos within a layout (every row of video v gets the frames
of the same other video), so no row keeps its own video even when a video has several questions. Rows whose
layout no other video shares are left out and counted.
"""
from __future__ import annotations

import random
from collections import defaultdict

from stages import bootstrap
from stages import tasks as task_registry


def layout(row: dict) -> tuple:
    """What must match for another video's frames to fit this prompt."""
    return (row["task"], float(row["fps"]), row.get("num_frames"), tuple(row.get("frame_times") or ()))


def swapped_rows(rows: list[dict], seed: int = 0) -> tuple[list[int], list[dict]]:
    """(indices into rows, the swapped copies): each copy is its row with another video's `frames`, same layout."""
    groups: dict[tuple, dict[str, list[int]]] = defaultdict(dict)
    for i, r in enumerate(rows):
        groups[layout(r)].setdefault(r["frames"], []).append(i)
    rng = random.Random(seed)
    donor: dict[int, dict] = {}
    for key in sorted(groups, key=repr):
        videos = sorted(groups[key])
        if len(videos) < 2:
            continue
        rng.shuffle(videos)
        for k, v in enumerate(videos):  # each video takes the next one's frames: a derangement of the videos
            other = rows[groups[key][videos[(k + 1) % len(videos)]][0]]
            for i in groups[key][v]:
                donor[i] = other
    kept = sorted(donor)
    return kept, [{**rows[i], "frames": donor[i]["frames"], "video_id": donor[i].get("video_id"),
                   "frames_of": donor[i].get("video_id")} for i in kept]


def plan(rows: list[dict], per_task: int, seed: int = 0) -> tuple[list[int], list[dict], int]:
    """The first `per_task` rows of every task (the evaluation's order), swapped: (indices into rows of the rows
    compared, their swapped copies, how many chosen rows were left out for want of another video)."""
    seen: dict[str, int] = defaultdict(int)
    pick = []
    for i, r in enumerate(rows):
        if seen[r["task"]] < per_task:
            seen[r["task"]] += 1
            pick.append(i)
    kept, swapped = swapped_rows([rows[i] for i in pick], seed)
    return [pick[k] for k in kept], swapped, len(pick) - len(kept)


def verdict(iv: dict) -> str:
    return ("answers use the video" if iv["lo"] > 0 else
            "scores BETTER with another video" if iv["hi"] < 0 else
            "NO sign the answers use the video")


def compare(own: list[dict], other: list[dict], level: float, resamples: int, seed: int) -> dict:
    """own / other: per-sample records (stages.tasks.score_outputs) of the same rows, own frames and swapped.
    Per task and headline metric: own, other, own - other with its paired interval, n, verdict."""
    by_task: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for a, b in zip(own, other, strict=True):
        by_task[a["task"]][0].append(a["metrics"])
        by_task[a["task"]][1].append(b["metrics"])
    headline = task_registry.headline()
    out = {}
    for task, (a, b) in sorted(by_task.items()):
        metric = headline.get(task)
        iv = bootstrap.paired_interval(task, a, b, level=level, resamples=resamples, seed=seed).get(metric)
        if iv is None:
            continue
        mine = task_registry.aggregate(task, a)[metric]
        theirs = task_registry.aggregate(task, b)[metric]
        out[task] = {"metric": metric, "own": round(float(mine), 6), "other": round(float(theirs), 6),
                     "delta": iv["delta"], "lo": iv["lo"], "hi": iv["hi"], "level": level, "n": len(a),
                     "verdict": verdict(iv)}
    return out


def measure(rows: list[dict], own: dict[str, list[dict]], answer, think: bool, protocol: str, per_task: int,
            level: float, resamples: int, seed: int) -> dict:
    """The whole check for one or more models. own: per model, its per-sample records of `rows`;
    answer(who, swapped rows) -> that model's texts. Returns {per_task, seed, samples, left_out, <who>: compare}."""
    idx, swapped, left_out = plan(rows, per_task, seed)
    out = {"per_task": per_task, "seed": seed, "samples": len(idx), "left_out": left_out}
    if not idx:
        return out
    for who, records in own.items():
        other = task_registry.score_outputs(swapped, answer(who, swapped), think, protocol)[1]
        out[who] = compare([records[i] for i in idx], other, level, resamples, seed)
    return out
