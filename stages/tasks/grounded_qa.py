"""Grounded video QA (`gqa`, NExT-GQA style): pick the option and give the evidence spans.

problem  {"question": str, "options": ["(A) ...", ...], "duration": float}
solution {"answer": "C", "glue": [[s, e], ...]}  (seconds; "(C)" is accepted too)
"""
from __future__ import annotations

from typing import Any

from .common import (
    Terms,
    extract_block,
    format_tags,
    gold_letter,
    layout,
    merged_iop,
    merged_iou,
    parse_intervals,
    parse_letter,
    ratio_metrics,
)
from .mcq import options_text

NAME = "gqa"
PARTS = ("format", "accuracy", "evidence_iou")
IOP_THRESHOLD = 0.5  # Acc@GQA: right answer and IoP >= 0.5 (NExT-GQA)
THRESHOLDS = (0.3, 0.5)  # NExT-GQA also reports IoU@m and IoP@m: fraction of questions with IoU/IoP >= m


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {
        **problem,
        "question": problem["question"],
        "options": options_text(problem["options"]),
        "duration": float(problem["duration"]),
    }


def parse(text: str) -> dict | None:
    """{"answer": letter or None, "glue": [[s, e], ...] or None}; None when neither can be read.

    Letter: first <answer> block; evidence: last <glue> block, a list of (start, end) pairs with start <= end
    (a span with start > end makes the whole list unreadable rather than being swapped).
    """
    letter = parse_letter(extract_block(text, "answer", last=False))
    glue = parse_intervals(extract_block(text, "glue"))
    if letter is None and glue is None:
        return None
    return {"answer": letter, "glue": glue}


def _gold(solution: dict) -> tuple[str, list]:
    return gold_letter(solution["answer"]), [[float(s), float(e)] for s, e in solution["glue"]]


def _format_ok(text: str, think: bool) -> bool:
    blocks = layout(text, format_tags(think, "answer", "glue"))
    return blocks is not None and parse_intervals(blocks[-1]) is not None


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    letter, glue = _gold(solution)
    pred = parse(text) or {"answer": None, "glue": None}
    return {
        "format": float(_format_ok(text, think)),
        "accuracy": float(pred["answer"] == letter),
        "evidence_iou": merged_iou(pred["glue"], glue) if pred["glue"] else 0.0,
    }


def sample_metrics(text: str, solution: dict) -> dict[str, Any]:
    letter, glue = _gold(solution)
    pred = parse(text) or {"answer": None, "glue": None}
    return {
        "correct": float(pred["answer"] == letter),
        "evidence_iou": merged_iou(pred["glue"], glue) if pred["glue"] else 0.0,
        "iop": merged_iop(pred["glue"], glue) if pred["glue"] else 0.0,
        "parsed": pred["answer"] is not None,
    }


def terms(rows: list[dict]) -> Terms:
    """Accuracy, evidence mIoU / mIoP (unreadable evidence = 0), IoU@m / IoP@m, Acc@GQA (correct and IoP >= 0.5)."""
    ious, iops = [float(r["evidence_iou"]) for r in rows], [float(r["iop"]) for r in rows]
    out: Terms = {
        "accuracy": ([float(r["correct"]) for r in rows], None),
        "evidence_mIoU": (ious, None),
        "mIoP": (iops, None),
        "Acc@GQA": ([float(bool(r["correct"]) and iop >= IOP_THRESHOLD) for r, iop in zip(rows, iops)], None),
    }
    for m in THRESHOLDS:
        out[f"IoU@{m}"] = ([float(iou >= m) for iou in ious], None)
        out[f"IoP@{m}"] = ([float(iop >= m) for iop in iops], None)
    out["parse_rate"] = ([float(r["parsed"]) for r in rows], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))
