"""Online filtering of groups whose rollouts all score alike (EasyR1-style), as a pure function.

A group of G completions with equal rewards has zero advantage for every member: no policy-gradient signal.
In TRL's "grpo" loss such rows still add their KL term and count in the batch mean, diluting the groups that do
carry a signal. We DROP them from the loss (and log the fraction) rather than resample replacements: resampling
would consume a variable number of prompts per step, so the data order (and a resumed run's next step) would
depend on the rewards; dropping keeps one prompt batch per step and the order fixed.
"""
from __future__ import annotations

import torch


def total_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over reward functions as TRL forms it; rows no function scored are NaN."""
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


def zero_std_rows(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool per row (groups = consecutive runs of G rows): True where the row's group has zero reward spread.

    NaN rewards (unscorable rows) are ignored; a group with fewer than two scored rows has no spread."""
    grouped = rewards.view(-1, num_generations)
    scored = ~torch.isnan(grouped)
    lo = torch.where(scored, grouped, torch.inf).min(dim=1).values
    hi = torch.where(scored, grouped, -torch.inf).max(dim=1).values
    flat = (scored.sum(dim=1) < 2) | torch.isclose(hi, lo, rtol=0.0, atol=1e-6)
    return flat.repeat_interleave(num_generations)
