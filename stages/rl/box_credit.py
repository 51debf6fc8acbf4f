"""Per-box credit for tracking answers (`train.box_credit`), as pure functions.

A tracking answer is 8 boxes, 32 coordinate tokens among about 84, and its `iou` reward part is the mean of the 8
boxes' IoUs. GRPO gives every token of an answer the same advantage, so the tokens of box k learn from the
average IoU deviation of all 8 boxes, 7/8 of which they did not write (docs/base-model.md: the credit for 32
coordinates comes from one scalar). With `train.box_credit` the tokens of box k carry box k's own deviation
instead of the average: in a group of G answers to one prompt,

    A_tok(i, box k) = A_i + w * ((v_ik - mean_j v_jk) - (p_i - mean_j p_j)) / s

where A_i is GRPO's advantage of answer i, v_ik the IoU of its box k, p_i = mean_k v_ik its iou part, w that
part's reward weight and s the same scale GRPO divides by (the group's reward std, or 1 with scale_rewards
none). Every other token keeps A_i. The reward is unchanged, and so is the answer's mean advantage over its boxes'
tokens when the boxes have equal token counts: the corrections of one answer sum to 0 over its boxes. Answers
whose boxes cannot be read (their iou part is 0) count as IoU 0 in every box for the group's means and keep A_i
on every token. Tokens that touch two boxes keep A_i.
"""
from __future__ import annotations

import torch


def token_owner(pieces: list[str], spans: list[tuple[int, int]]) -> list[int]:
    """For each token (its decoded text, in order), the index of the one span its characters overlap, else -1."""
    owner, pos = [], 0
    for piece in pieces:
        start, end = pos, pos + len(piece)
        pos = end
        hits = [k for k, (a, b) in enumerate(spans) if start < b and end > a]
        owner.append(hits[0] if len(hits) == 1 else -1)
    return owner


def corrections(values: list[list[float] | None], num_spans: int) -> list[list[float] | None]:
    """One group's per-span corrections before weighting and scaling: (v_ik - mean_j v_jk) - (p_i - mean_j p_j)
    for each row with spans, None for rows without (they count as 0 in every span)."""
    filled = [v if v is not None else [0.0] * num_spans for v in values]
    if any(len(v) != num_spans for v in filled):
        raise ValueError(f"every row of a group needs {num_spans} span values, got {[len(v) for v in filled]}")
    n = len(filled)
    span_mean = [sum(v[k] for v in filled) / n for k in range(num_spans)]
    parts = [sum(v) / num_spans for v in filled]
    part_mean = sum(parts) / n
    return [None if v is None else [(v[k] - span_mean[k]) - (parts[i] - part_mean) for k in range(num_spans)]
            for i, v in enumerate(values)]


def token_advantages(advantages: torch.Tensor, owners: list[list[int] | None],
                     row_corrections: list[list[float] | None], scale: torch.Tensor, weight: list[float],
                     length: int) -> torch.Tensor:
    """(B, length) advantages: row i's A_i everywhere, plus weight_i * correction / scale_i on tokens of a span.
    owners[i][t] is the span of token t (-1: none); rows with None owners or corrections keep A_i."""
    out = advantages.unsqueeze(1).repeat(1, length).clone()
    for i, (own, corr) in enumerate(zip(owners, row_corrections, strict=True)):
        if own is None or corr is None:
            continue
        for t, k in enumerate(own[:length]):
            if k >= 0:
                out[i, t] += weight[i] * corr[k] / float(scale[i])
    return out
