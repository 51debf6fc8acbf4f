"""Off-policy guidance for groups that lost the answer layout (LUFFY-style), as pure functions.

When every one of a group's G sampled answers scores a total reward of exactly 0 (not one keeps even the task's
answer layout), every advantage is 0 and GRPO has no gradient that could bring the layout back: an absorbing
state (docs/base-model.md, "fourth round": tracking answers that drop their box separators and never recover).
With `train.guide_lost_groups` the LAST completion of such a group is replaced by the sample's gold answer written
in the prompt's layout (`stages.tasks.target_text`, the SFT target) and scored by the same reward functions, so
the group has a spread again. This is LUFFY's off-policy guidance (Yan et al., 2025) restricted to the groups where
on-policy sampling has no signal left; no reward changes, a healthy group is never touched, and the fraction of
groups guided is logged (guide/guided_frac) so that a reward curve lifted by guidance can be told apart.
"""
from __future__ import annotations

import json

import torch


def lost_groups(totals: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool per group (consecutive runs of G rows): every row scored and every total reward exactly 0."""
    grouped = totals.view(-1, num_generations)
    scored = ~torch.isnan(grouped)
    return scored.all(dim=1) & (torch.where(scored, grouped, 1.0) == 0).all(dim=1)


def gold_completion_ids(tokenizer, task: str, solution: str | dict, think: bool, end_id: int,
                        max_length: int) -> list[int]:
    """Token ids of the gold answer in the prompt's layout, ended like a sampled answer (`end_id`), at most
    `max_length` tokens in all (a longer gold answer is cut as a sampled one would be: no end token)."""
    from stages.tasks import target_text

    solution = json.loads(solution) if isinstance(solution, str) else solution
    ids = tokenizer(target_text(task, solution, think), add_special_tokens=False)["input_ids"] + [end_id]
    return ids[:max_length]
