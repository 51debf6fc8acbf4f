"""Single-object tracking (`tracking`, GOT-10k style): one box per sampled frame, normalised xyxy.

problem  {"object": str, "init_box": [x0, y0, x1, y1]}   (optional "num_boxes", default 8)
solution {"boxes": [[x0, y0, x1, y1], ... 8]}
The model must give exactly as many boxes as the annotation has (8 in VideoChat-R1). Upstream sampled 7 frames
but demanded 8 boxes (reference section 8, defect 5); the frame count is the extract stage's `tracking_frames`,
equal to the box count.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .common import (
    Terms,
    box_iou,
    check_protocol,
    extract_block,
    format_tags,
    layout,
    mean,
    parse_tuples,
    ratio_metrics,
)

NAME = "tracking"
PARTS = ("format", "iou")
NUM_BOXES = 8
SUCCESS_THRESHOLDS = (0.5, 0.75)


def _box_text(box) -> str:
    return "[" + ", ".join(f"{float(v):.3f}" for v in box) + "]"


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {
        **problem,
        "object": problem["object"],
        "init_box": _box_text(problem["init_box"]),
        "num_boxes": int(problem.get("num_boxes", NUM_BOXES)),
    }


def parse(text: str, protocol: str = "ours") -> list[list[float]] | None:
    """The last <answer> block as a list of [x0, y0, x1, y1] boxes (any count, signed numbers), else None;
    protocol="upstream": the first <answer> block as VideoChat-R1's evaluation reads it (parse_upstream)."""
    if check_protocol(protocol) == "upstream":
        return parse_upstream(text)
    return parse_tuples(extract_block(text, "answer"), 4, signed=True)


# VideoChat-R1 src_eval/evaluate_track.py, process_work_items + is_valid_list_of_lists: the FIRST <answer> block,
# newlines removed, read by ast.literal_eval; valid when it is a list of exactly 8 lists (not tuples) of 4 items.
# Python number literals are read here without evaluating anything: one optional sign, decimals with an optional
# fraction and exponent ("+0.230", "6.22e-01", "1.", ".5"); the other literals ast.literal_eval also takes (hex,
# underscores, True/False, complex, strings) are not, nor are infinities (docs/tasks.md lists what that changes).
_PY_NUM = r"(?:[+-][ \t]*)?(?:\d{1,9}(?:\.\d{0,20})?|\.\d{1,20})(?:[eE][+-]?\d{1,3})?"
_PY_BOX = r"\[\s*" + r"\s*,\s*".join([f"({_PY_NUM})"] * 4) + r"\s*(?:,\s*)?\]"
_PY_BOX_RE = re.compile(_PY_BOX)
_PY_LEADING_ZERO_INT = re.compile(r"0+[1-9]\d*")
_PY_BOX_LIST = re.compile(rf"\s*\[\s*{_PY_BOX}(?:\s*,\s*{_PY_BOX})*\s*(?:,\s*)?\]\s*")


def parse_upstream(text: str) -> list[list[float]] | None:
    """The first <answer> block read as VideoChat-R1's evaluation reads it: 8 boxes, else None."""
    block = extract_block(text, "answer", last=False)
    if block is None:
        return None
    block = block.replace("\n", "")
    if not _PY_BOX_LIST.fullmatch(block):
        return None
    texts = [[v.lstrip("+- \t") for v in m.groups()] for m in _PY_BOX_RE.finditer(block)]
    if any(_PY_LEADING_ZERO_INT.fullmatch(v) for box in texts for v in box):
        return None  # "07": a SyntaxError for literal_eval ("00" and "07.5" are fine)
    boxes = [[float(v.replace(" ", "").replace("\t", "")) for v in m.groups()] for m in _PY_BOX_RE.finditer(block)]
    if len(boxes) != NUM_BOXES or not all(math.isfinite(v) for b in boxes for v in b):
        return None
    return boxes


def valid_box(box: list[float]) -> bool:
    x0, y0, x1, y1 = box
    return 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def _gold(solution: dict) -> list[list[float]]:
    boxes = [[float(v) for v in box] for box in solution["boxes"]]
    if not boxes or any(len(b) != 4 for b in boxes):
        raise ValueError(f"tracking solution needs a list of 4-number boxes, got {solution['boxes']!r}")
    return boxes


def frame_ious(text: str, gold: list[list[float]], protocol: str = "ours") -> list[float]:
    """IoU per annotated frame; all 0 unless the answer has exactly one box per annotated frame. Upstream's IoU
    (evaluate_track.py, calculate_iou) does not clip box areas at 0, which changes nothing: an inverted or empty
    predicted box has no intersection, so its IoU is 0 (or -0.0) there as here."""
    pred = parse(text, protocol)
    if pred is None or len(pred) != len(gold):
        return [0.0] * len(gold)
    return [box_iou(p, g) for p, g in zip(pred, gold)]


def _format_ok(text: str, gold: list[list[float]], think: bool) -> bool:
    blocks = layout(text, format_tags(think))
    boxes = parse_tuples(blocks[-1], 4, signed=True) if blocks else None
    return boxes is not None and len(boxes) == len(gold) and all(valid_box(b) for b in boxes)


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    gold = _gold(solution)
    return {"format": float(_format_ok(text, gold, think)), "iou": mean(frame_ious(text, gold))}


def sample_metrics(text: str, solution: dict, protocol: str = "ours") -> dict[str, Any]:
    gold = _gold(solution)
    ious = frame_ious(text, gold, protocol)
    pred = parse(text, protocol)
    return {"miou": mean(ious), "ious": ious, "parsed": pred is not None and len(pred) == len(gold)}


def terms(rows: list[dict]) -> Terms:
    """AO = mean over sequences of the per-sequence mean IoU; SR@t = fraction of all annotated frames with
    IoU > t (strictly greater, as the GOT-10k toolkit counts success): per sequence its successes over its frames."""
    frames = [[float(iou) for iou in r["ious"]] for r in rows]
    out: Terms = {"AO": ([float(r["miou"]) for r in rows], None)}
    for t in SUCCESS_THRESHOLDS:
        out[f"SR@{t}"] = ([float(sum(iou > t for iou in f)) for f in frames], [float(len(f)) for f in frames])
    out["parse_rate"] = ([float(r["parsed"]) for r in rows], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))
