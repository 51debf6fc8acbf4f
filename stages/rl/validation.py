"""Greedy validation while GRPO trains, and the choice of which validated step becomes the model.

Sampled rewards (the training curves) can rise while the GREEDY answer - the one evaluation and users read -
breaks: docs/base-model.md ("fifth round") has runs whose sampled tracking answers kept their layout (format
0.33-0.93) while 29 of 48 greedy answers wrote a second box list after `</answer>`. So a few training videos
(whole: every task's rows of them, drawn by seed) are set aside; before the first step, every `steps` steps and at the last one
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
from collections import Counter

SELECT_RULES = ("last", "guard", "best")


def video_key(row: dict) -> str:
    """The source video of a row: its video_id (build_samples), else its frames file, else its id."""
    return str(row.get("video_id") or row.get("frames") or row["id"])


def split_validation(rows: list[dict], tasks: list[str], per_task: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows). Videos are drawn in a seeded order and set aside WHOLE, with their rows
    of every task (one video holds a tg query, gqa questions and qa questions about the same event: a gqa row
    left in training would teach the answer of a tg validation row), until every task in `tasks` has at least
    `per_task` validation rows; a video is skipped when it would leave a task without training rows. Order is
    kept."""
    if per_task <= 0:
        return list(rows), []
    videos: dict[str, Counter] = {}
    for r in rows:
        videos.setdefault(video_key(r), Counter())[r["task"]] += 1
    order = sorted(videos)
    random.Random(seed).shuffle(order)
    need = {t: per_task for t in tasks}
    left = Counter(r["task"] for r in rows)
    chosen = set()
    for v in order:
        if all(n <= 0 for n in need.values()):
            break
        counts = videos[v]
        if not any(need.get(t, 0) > 0 for t in counts) or any(left[t] <= n for t, n in counts.items()):
            continue
        chosen.add(v)
        for t, n in counts.items():
            need[t] = need.get(t, 0) - n
            left[t] -= n
    return ([r for r in rows if video_key(r) not in chosen], [r for r in rows if video_key(r) in chosen])


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
