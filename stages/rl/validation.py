"""Greedy validation while GRPO trains, and the choice of which validated step becomes the model.

Sampled rewards (the training curves) can rise while the GREEDY answer - the one evaluation and users read -
breaks: docs/base-model.md ("fifth round") has runs whose sampled tracking answers kept their layout (format
0.33-0.93) while 29 of 48 greedy answers wrote a second box list after `</answer>`. So a few training rows per
task (whole videos, drawn by seed) are set aside; before the first step, every `steps` steps and at the last one
the policy answers them greedily with the evaluation's decoding (stages/model/generate.py), and each task's
headline metric and parse rate are logged (MLflow val/<task>/<metric>). Which validated step becomes the model:

- last:  the final weights, always (validation only watches);
- guard: the last validated step at which no task's greedy parse rate fell more than `parse_drop` below its value
         before training (a collapse of the answer layout rolls back; noise in the metrics does not);
- best:  the validated step with the highest mean headline metric over the tasks (ties: the later step), as
         transformers' load_best_model_at_end; it chases noise when the validation rows are few.

The pure rules are here; stages/train.py wires them (ValidationCallback) and docs/training.md has the numbers.
"""
from __future__ import annotations

import random

SELECT_RULES = ("last", "guard", "best")


def video_key(row: dict) -> str:
    """Rows that share a video (one clip, several questions) are set aside together: the frames file names it."""
    return str(row.get("frames") or row["id"])


def split_validation(rows: list[dict], tasks: list[str], per_task: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows): per task, whole videos drawn by `seed` until at least `per_task` rows
    are set aside, and never all of a task's videos (a task must keep training rows). Order is kept."""
    if per_task <= 0:
        return list(rows), []
    rng = random.Random(seed)
    chosen: set[tuple[str, str]] = set()
    for task in tasks:
        videos = sorted({video_key(r) for r in rows if r["task"] == task})
        counts = {v: 0 for v in videos}
        for r in rows:
            if r["task"] == task:
                counts[video_key(r)] += 1
        rng.shuffle(videos)
        taken = 0
        for v in videos[:-1]:  # the last video always trains
            if taken >= per_task:
                break
            chosen.add((task, v))
            taken += counts[v]
    train = [r for r in rows if (r["task"], video_key(r)) not in chosen]
    val = [r for r in rows if (r["task"], video_key(r)) in chosen]
    return train, val


def mean_headline(metrics: dict[str, dict[str, float]], headline: dict[str, str]) -> float:
    """Mean over the validated tasks of each task's headline metric (a task absent from `metrics` counts 0)."""
    return sum(float(metrics.get(t, {}).get(m, 0.0)) for t, m in headline.items()) / max(len(headline), 1)


def passes_guard(metrics: dict[str, dict[str, float]], start: dict[str, dict[str, float]], parse_drop: float) -> bool:
    """No task's parse rate more than `parse_drop` below its value before training."""
    return all(float(metrics.get(t, {}).get("parse_rate", 0.0)) >= float(m.get("parse_rate", 0.0)) - parse_drop
               for t, m in start.items())


def selected(history: list[dict], rule: str, headline: dict[str, str], parse_drop: float) -> dict | None:
    """The history entry ({"step", "metrics"}, in step order, the first = before training) that `rule` picks;
    None when no entry qualifies (guard: every step, the start included, fails; cannot happen for the start)."""
    if rule not in SELECT_RULES:
        raise ValueError(f"validation rule must be one of {SELECT_RULES}, got {rule!r}")
    if not history:
        return None
    if rule == "last":
        return history[-1]
    if rule == "guard":
        ok = [h for h in history if passes_guard(h["metrics"], history[0]["metrics"], parse_drop)]
        return ok[-1] if ok else None
    return max(reversed(history), key=lambda h: mean_headline(h["metrics"], headline))  # later wins ties
