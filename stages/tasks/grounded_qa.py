"""Grounded video QA (`gqa`, NExT-GQA style): pick the option and give the evidence spans.

problem  {"question": str, "options": ["(A) ...", ...], "duration": float}
solution {"answer": "C", "glue": [[s, e], ...]}  (seconds; "(C)" is accepted too)
"""
from __future__ import annotations

import random
import re
from typing import Any

from stages.datasets import annotations as ann

from .common import (
    NUM,
    Terms,
    check_protocol,
    covered_length,
    extract_block,
    format_tags,
    gold_letter,
    layout,
    merged_iou,
    most_common_letter,
    option_letters,
    parse_intervals,
    parse_letter,
    prior_interval,
    ratio_metrics,
    segment_iou_iop,
    target_head,
    two_decimals,
    upstream_letter,
)
from .mcq import options_text
from .temporal_grounding import best_fraction, fraction_interval

NAME = "gqa"
PARTS = ("format", "accuracy", "evidence_iou")
HEADLINE = "evidence_mIoU"
PLOT_IOU_FIELD = "evidence_iou"
INPUT = "video"
PROBLEM_FIELDS = ("question", "options", "duration")
IOP_THRESHOLD = 0.5  # Acc@GQA: right answer and IoP >= 0.5 (NExT-GQA)
THRESHOLDS = (0.3, 0.5)  # NExT-GQA also reports IoU@m and IoP@m: fraction of questions with IoU/IoP >= m

# VideoChat-R1 src_eval/evaluate_gqa.py, is_valid_two_d_list_format: the glue must match
# ^\[(\(\d+(\.\d+)?,\s*\d+(\.\d+)?\)(,\s*\(...\))*(,)?|)\]$ (tuples only, whitespace only after a comma, a trailing
# comma, "[]" allowed, one trailing newline before $) and every pair must have start <= end. Numbers bounded as ours.
_UPSTREAM_SPAN = rf"\(({NUM}),\s*({NUM})\)"
_UPSTREAM_SPAN_RE = re.compile(_UPSTREAM_SPAN)
_UPSTREAM_GLUE = re.compile(rf"\[(?:{_UPSTREAM_SPAN}(?:,\s*{_UPSTREAM_SPAN})*,?)?\]\n?")


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {
        **problem,
        "question": problem["question"],
        "options": options_text(problem["options"]),
        "duration": float(problem["duration"]),
    }


def upstream_glue(content: str | None) -> list[list[float]] | None:
    """Evidence spans as VideoChat-R1's evaluation reads them (may be []), else None."""
    if content is None or not _UPSTREAM_GLUE.fullmatch(content):
        return None
    spans = [[float(a), float(b)] for a, b in _UPSTREAM_SPAN_RE.findall(content)]
    return spans if all(s <= e for s, e in spans) else None


def parse(text: str, protocol: str = "ours") -> dict | None:
    """{"answer": letter or None, "glue": [[s, e], ...] or None}; None when neither can be read.

    Letter: first <answer> block; evidence: last <glue> block, a list of (start, end) pairs with start <= end
    (a span with start > end makes the whole list unreadable rather than being swapped). protocol="upstream":
    VideoChat-R1's evaluate_gqa.py reading, the first <answer> block (common.upstream_letter) and the FIRST
    <glue> block (upstream_glue).
    """
    if check_protocol(protocol) == "upstream":
        letter = upstream_letter(extract_block(text, "answer", last=False))
        glue = upstream_glue(extract_block(text, "glue", last=False))
    else:
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


def _evidence_iou(spans: list | None, gold: list, protocol: str) -> float:
    """VideoChat-R1's evidence IoU: union of the merged spans vs union of the merged gold (the reward's). Under the
    upstream protocol an empty union scores 1 (evaluate_gqa.py, compute_iou), e.g. "[]" against zero-length gold."""
    if spans is None:
        return 0.0
    if protocol == "upstream" and covered_length(spans) + covered_length(gold) == 0:
        return 1.0
    return merged_iou(spans, gold) if spans else 0.0


def sample_metrics(text: str, solution: dict, protocol: str = "ours") -> dict[str, Any]:
    """Metric inputs: `evidence_iou` (union vs union, VideoChat-R1's), and NExT-GQA's official `seg_iou` / `iop`
    against the best gold segment (common.segment_iou_iop) under both protocols."""
    letter, glue = _gold(solution)
    pred = parse(text, protocol) or {"answer": None, "glue": None}
    seg_iou, iop = segment_iou_iop(pred["glue"] or [], glue)
    return {
        "correct": float(pred["answer"] == letter),
        "evidence_iou": _evidence_iou(pred["glue"], glue, protocol),
        "seg_iou": seg_iou,
        "iop": iop,
        "parsed": pred["answer"] is not None,
    }


def terms(rows: list[dict]) -> Terms:
    """Accuracy; evidence mIoU (VideoChat-R1's union IoU; unreadable evidence = 0); NExT-GQA's official seg_mIoU,
    mIoP, IoU@m, IoP@m (best gold segment) and Acc@GQA (correct and IoP >= 0.5).

    Rows written before `seg_iou` existed hold only the union IoU; it stands in for it (equal for one gold segment).
    """
    ious, iops = [float(r["evidence_iou"]) for r in rows], [float(r["iop"]) for r in rows]
    seg_ious = [float(r.get("seg_iou", r["evidence_iou"])) for r in rows]
    out: Terms = {
        "accuracy": ([float(r["correct"]) for r in rows], None),
        "evidence_mIoU": (ious, None),
        "seg_mIoU": (seg_ious, None),
        "mIoP": (iops, None),
        "Acc@GQA": ([float(bool(r["correct"]) and iop >= IOP_THRESHOLD) for r, iop in zip(rows, iops)], None),
    }
    for m in THRESHOLDS:
        out[f"IoU@{m}"] = ([float(iou >= m) for iou in seg_ious], None)
        out[f"IoP@{m}"] = ([float(iop >= m) for iop in iops], None)
    out["parse_rate"] = ([float(r["parsed"]) for r in rows], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))


# ---------------------------------------------------------------- annotations


def load_annotations(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """NExT-GQA JSON list {id, video, question, options, answer, duration, glue} -> samples with the item's id
    (answer letter + evidence intervals; an interval ending after the video is clipped or rejected by `policy`)."""

    def sample(item, sid):
        duration, glue = ann.duration(ann.field(item, "duration")), ann.field(item, "glue")
        options, letter = ann.options_letter(ann.field(item, "options"), ann.field(item, "answer"))
        if not isinstance(glue, list) or not glue:
            raise ValueError("no evidence interval")
        return {
            "id": sid, "task": NAME, "video_id": ann.video_id_of(ann.text(ann.field(item, "video"), "video")),
            "problem": {"question": ann.text(ann.field(item, "question"), "question"), "options": options,
                        "duration": duration},
            "solution": {"answer": letter, "glue": [ann.interval(iv, duration, policy, "evidence") for iv in glue]},
        }

    return ann.id_items(ann.load_json(path), path, "NExT-GQA", sample)


# ---------------------------------------------------------------- SFT targets and blind answers


def target_text(solution: dict, think: bool = True) -> str:
    glue = ", ".join(f"({two_decimals(s)}, {two_decimals(e)})" for s, e in solution["glue"])
    return f"{target_head(think)}<answer>{solution['answer']}</answer> <glue>[{glue}]</glue>"


def prior_solution(row: dict, rng: random.Random) -> dict:
    interval = prior_interval(row["problem"], rng)
    return {"answer": rng.choice(option_letters(row["problem"])), "glue": [interval]}


def blind_fit(train_rows: list[dict], think: bool) -> dict:
    """The most frequent letter, and one evidence interval as fractions of the duration fit on the first gold span
    (scored as tg's IoU)."""
    return {"fraction": best_fraction(train_rows, lambda r: r["solution"]["glue"][0], think),
            "letter": most_common_letter(train_rows)}


def blind_solution(fit: dict, row: dict) -> dict:
    return {"answer": fit["letter"], "glue": [fraction_interval(fit["fraction"], row)]}
