"""Single-object tracking (`tracking`, GOT-10k style): one box per sampled frame, normalised xyxy.

problem  {"object": str, "init_box": [x0, y0, x1, y1]}   (optional "num_boxes", default 8)
solution {"boxes": [[x0, y0, x1, y1], ... 8]}
The model must give exactly as many boxes as the annotation has (8 in VideoChat-R1). Upstream sampled 7 frames
but demanded 8 boxes (reference section 8, defect 5); the frame count is the extract stage's `tracking_frames`,
equal to the box count.
"""
from __future__ import annotations

from typing import Any

from .common import Terms, box_iou, extract_block, format_tags, layout, mean, parse_tuples, ratio_metrics

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


def parse(text: str) -> list[list[float]] | None:
    """The last <answer> block as a list of [x0, y0, x1, y1] boxes (any count, signed numbers), else None."""
    return parse_tuples(extract_block(text, "answer"), 4, signed=True)


def valid_box(box: list[float]) -> bool:
    x0, y0, x1, y1 = box
    return 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def _gold(solution: dict) -> list[list[float]]:
    boxes = [[float(v) for v in box] for box in solution["boxes"]]
    if not boxes or any(len(b) != 4 for b in boxes):
        raise ValueError(f"tracking solution needs a list of 4-number boxes, got {solution['boxes']!r}")
    return boxes


def frame_ious(text: str, gold: list[list[float]]) -> list[float]:
    """IoU per annotated frame; all 0 unless the answer has exactly one box per annotated frame."""
    pred = parse(text)
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


def sample_metrics(text: str, solution: dict) -> dict[str, Any]:
    gold = _gold(solution)
    ious = frame_ious(text, gold)
    pred = parse(text)
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
