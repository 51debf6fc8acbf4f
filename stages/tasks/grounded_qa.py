"""Grounded video QA (`gqa`, NExT-GQA style): pick the option and give the evidence spans.

problem  {"question": str, "options": ["(A) ...", ...], "duration": float}
solution {"answer": "C", "glue": [[s, e], ...]}  (seconds; "(C)" is accepted too)
"""
from __future__ import annotations

from typing import Any

from .common import (
    extract_block,
    format_tags,
    gold_letter,
    layout,
    mean,
    merged_iop,
    merged_iou,
    parse_intervals,
    parse_letter,
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


def aggregate(rows: list[dict]) -> dict[str, float]:
    """Accuracy, evidence mIoU / mIoP (unreadable evidence = 0), IoU@m / IoP@m, Acc@GQA (correct and IoP >= 0.5)."""
    out = {
        "count": len(rows),
        "accuracy": mean([float(r["correct"]) for r in rows]),
        "evidence_mIoU": mean([float(r["evidence_iou"]) for r in rows]),
        "mIoP": mean([float(r["iop"]) for r in rows]),
        "Acc@GQA": mean([float(bool(r["correct"]) and r["iop"] >= IOP_THRESHOLD) for r in rows]),
    }
    for m in THRESHOLDS:
        out[f"IoU@{m}"] = mean([float(r["evidence_iou"] >= m) for r in rows])
        out[f"IoP@{m}"] = mean([float(r["iop"] >= m) for r in rows])
    out["parse_rate"] = mean([float(r["parsed"]) for r in rows])
    return out
