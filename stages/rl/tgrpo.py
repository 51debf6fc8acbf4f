"""T-GRPO's temporal-contrast bonus (Video-R1; reference section 7) as pure functions.

Per prompt, G rollouts see the frames in order and G/2 see them shuffled. If the ordered group's mean accuracy is
at least `ratio` times the shuffled group's, the model used the temporal order to get it right: every ordered
completion whose accuracy exceeds `min_accuracy` earns `bonus`. Shuffled rollouts only score; they never enter
the loss.
"""
from __future__ import annotations

import numpy as np
import torch

from stages import tasks as task_registry


def accuracy_part(task: str) -> str:
    """The reward part that measures correctness: the task's first part that is not `format`
    (tg: iou, gqa: accuracy, tracking: iou, qa: accuracy)."""
    parts = [p for p in task_registry.get_task(task).PARTS if p != "format"]
    if not parts:
        raise ValueError(f"task {task!r} has no accuracy reward part")
    return parts[0]


def accuracy(task: str, completion, solution, think: bool) -> float:
    return float(task_registry.score(task, completion, solution, think)[accuracy_part(task)])


def temporal_bonus(ordered: torch.Tensor, shuffled: torch.Tensor, ratio: float = 0.8, bonus: float = 0.3,
                   min_accuracy: float = 0.1) -> torch.Tensor:
    """ordered: (groups, G) accuracies; shuffled: (groups, S) accuracies, NaN where a group has no such rollout.
    Returns (groups, G): `bonus` for correct ordered completions of groups that pass the contrast, else 0."""
    if ordered.dim() != 2 or shuffled.dim() != 2 or ordered.size(0) != shuffled.size(0):
        raise ValueError(f"need (groups, G) and (groups, S), got {tuple(ordered.shape)} and {tuple(shuffled.shape)}")
    has_shuffled = (~torch.isnan(shuffled)).any(dim=1)
    shuffled_mean = torch.nan_to_num(torch.nanmean(shuffled, dim=1), nan=0.0)
    ordered_mean = torch.nanmean(ordered, dim=1)
    passes = has_shuffled & (ordered_mean >= ratio * shuffled_mean)
    correct = torch.nan_to_num(ordered, nan=0.0) > min_accuracy
    return (passes.unsqueeze(1) & correct).to(ordered.dtype) * bonus


def shuffle_frames(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(a copy of `frames` in a random order that is never the original one, that order) — T-GRPO's contrast."""
    n = int(frames.shape[0])
    order = rng.permutation(n)
    if n > 1 and (order == np.arange(n)).all():
        order = np.roll(order, 1)
    return np.ascontiguousarray(frames[order]), order
