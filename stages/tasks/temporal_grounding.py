"""Temporal grounding (`tg`, Charades-STA style): when does "<sentence>" happen? Answer "start to end" seconds.

problem  {"sentence": str, "duration": float}
solution {"timestamps": [start, end]}  (seconds)
"""
from __future__ import annotations

import re
from typing import Any

from .common import NUM, Terms, extract_block, format_tags, interval_iou, layout, ratio_metrics

NAME = "tg"
PARTS = ("format", "iou")
THRESHOLDS = (0.3, 0.5, 0.7)

_UNIT = r"(?:\s{0,4}(?:seconds?|secs?|s)\b)?"
# "a to b" / "a and b"; a number starts after no digit, dot or minus (so "-3" and the tail of "1234567890"
# are not read as numbers) and does not continue into more digits.
_PAIR = re.compile(
    rf"(?<![\d.\-])({NUM})(?!\.?\d){_UNIT}\s{{0,8}}(?:to|and)\s{{0,8}}({NUM})(?!\.?\d)", re.IGNORECASE
)


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {**problem, "sentence": problem["sentence"], "duration": float(problem["duration"])}


def parse(text: str) -> list[float] | None:
    """The last "a to b" (or "a and b") pair of non-negative decimals in the last <answer> block.

    Upstream accepted start > end and its eval scripts parsed differently from its reward (reference section 8,
    defect 4); we reject start > end (None, so reward 0) and this is the one parser used by training and
    evaluation.
    """
    block = extract_block(text, "answer")
    if block is None:
        return None
    last = None
    for last in _PAIR.finditer(block):
        pass
    if last is None:
        return None
    start, end = float(last.group(1)), float(last.group(2))
    return [start, end] if start <= end else None


def _gold(solution: dict) -> list[float]:
    start, end = (float(x) for x in solution["timestamps"])
    return [start, end]


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    gold = _gold(solution)
    pred = parse(text)
    return {
        "format": float(layout(text, format_tags(think)) is not None),
        "iou": interval_iou(pred, gold) if pred is not None else 0.0,
    }


def sample_metrics(text: str, solution: dict) -> dict[str, Any]:
    pred = parse(text)
    return {"iou": interval_iou(pred, _gold(solution)) if pred is not None else 0.0, "parsed": pred is not None}


def terms(rows: list[dict]) -> Terms:
    """mIoU over queries (unparsable = 0) and R@m = fraction of queries with IoU >= m (see common.ratio_metrics)."""
    ious = [float(r["iou"]) for r in rows]
    out: Terms = {"mIoU": (ious, None), "parse_rate": ([float(r["parsed"]) for r in rows], None)}
    for m in THRESHOLDS:
        out[f"R@{m}"] = ([float(iou >= m) for iou in ious], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))
