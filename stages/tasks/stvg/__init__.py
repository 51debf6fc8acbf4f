"""Spatio-temporal video grounding (`stvg`, HC-STVG style): WHEN does "<sentence>" happen and WHERE is its object
in the sampled frames inside that interval?

problem  {"sentence": str, "duration": float, "frame_times": [t0, t1, ...]}  (seconds of the sampled frames)
solution {"timestamps": [start, end], "frame_times": [t0, ...], "boxes": [xyxy or None, ... one per sampled frame]}
Before bind_frames the sample carries the annotation's whole tube instead (solution "track", see
stages/tasks/stvg/hcstvg.py); bind_frames turns it into the per-sampled-frame form above from the frame-index meta.

Answer (short, for a tiny model: one token per number on the 0.25 s / 0.01 grids):
    <answer>2.25 to 4.50</answer> <boxes>[[0.10, 0.20, 0.30, 0.40], ...]</boxes>
the interval in seconds, then one normalised [x0, y0, x1, y1] box per listed frame time t with start <= t < end,
in the listed order (`<boxes>[]</boxes>` when no listed frame lies inside). A frame is inside an interval when
start <= t < end (half-open: the synthetic convention that an object visible on frames a .. b-1 has [a/fps, b/fps],
and the frames TubeDETR / CG-STVG count, `start <= frame_id < end`).

Gold frames G: the sampled frames inside the gold interval (each has a gold box). Predicted frames P: the sampled
frames inside the predicted interval, the k-th taking the k-th predicted box. A sample's
    vIoU = sum over frames in P and G of IoU(predicted box, gold box) / |P or G|
with a missing predicted box counting 0. HC-STVG's official evaluation sums over every annotated frame of the video,
we over the sampled frames the model saw (docs/tasks.md, "stvg").
There is no upstream protocol (VideoChat-R1 has no STVG task): "upstream" reads answers as "ours".
"""
from __future__ import annotations

import random
import re
from typing import Any

from ..common import (
    NUM,
    Terms,
    box_iou,
    check_protocol,
    extract_block,
    format_tags,
    interval_iou,
    layout,
    mean,
    parse_tuples,
    ratio_metrics,
    target_head,
)
from . import hcstvg

NAME = "stvg"
PARTS = ("format", "tiou", "viou")
HEADLINE = "m_vIoU"
PLOT_IOU_FIELD = "viou"
INPUT = "video"
PROBLEM_FIELDS = ("sentence", "duration", "frame_times")
THRESHOLDS = (0.3, 0.5)  # vIoU@R as HC-STVG papers report it: fraction of queries with vIoU > R
ANSWER_TAGS = ("answer", "boxes")
BLIND_GRID = [i / 20 for i in range(21)]

_INTERVAL = re.compile(rf"\s*({NUM})\s{{1,4}}to\s{{1,4}}({NUM})\s*")
_EMPTY_LIST = re.compile(r"\s*\[\s*\]\s*")


def _t(x: float) -> str:
    return f"{float(x):.2f}"


def _box_text(box) -> str:
    return "[" + ", ".join(_t(v) for v in box) + "]"


def prompt_fields(problem: dict) -> dict[str, Any]:
    times = problem.get("frame_times")
    if not times:
        raise KeyError("frame_times")  # bind_frames puts them in; render_prompt names the missing field
    return {**problem, "sentence": problem["sentence"], "duration": float(problem["duration"]),
            "frame_times": ", ".join(_t(t) for t in times), "num_frames": len(times)}


# ---------------------------------------------------------------- parsing


def parse_interval(block: str | None) -> list[float] | None:
    """`a to b` (non-negative decimals, a <= b) and nothing else, else None."""
    m = _INTERVAL.fullmatch(block) if block is not None else None
    if m is None:
        return None
    start, end = float(m.group(1)), float(m.group(2))
    return [start, end] if start <= end else None


def parse_boxes(block: str | None) -> list[list[float]] | None:
    """A list of [x0, y0, x1, y1] boxes (signed numbers, any count, `[]` allowed), else None."""
    if block is not None and _EMPTY_LIST.fullmatch(block):
        return []
    return parse_tuples(block, 4, signed=True)


def parse(text: str, protocol: str = "ours") -> dict | None:
    """{"interval": [s, e] or None, "boxes": [...] or None} from the last <answer> and <boxes> blocks; None when
    neither can be read. Never raises."""
    check_protocol(protocol)  # "upstream": no upstream STVG evaluation exists, read as "ours"
    interval = parse_interval(extract_block(text, "answer"))
    boxes = parse_boxes(extract_block(text, "boxes"))
    if interval is None and boxes is None:
        return None
    return {"interval": interval, "boxes": boxes}


# ---------------------------------------------------------------- scoring


def frames_inside(times, interval) -> list[int]:
    """Indices of the frame times t with start <= t < end, in order."""
    start, end = interval
    return [i for i, t in enumerate(times) if start <= float(t) < end]


def _gold(solution: dict) -> tuple[list[float], list[float], list]:
    if "frame_times" not in solution:
        raise ValueError("stvg solution has no frame_times: bind_frames was not applied (answers name the frames the "
                         "model saw: score the samples file build_samples wrote, e.g. data/samples/eval.jsonl)")
    times = [float(t) for t in solution["frame_times"]]
    boxes = solution["boxes"]
    if len(boxes) != len(times):
        raise ValueError(f"stvg solution has {len(boxes)} boxes for {len(times)} frame times")
    start, end = (float(x) for x in solution["timestamps"])
    return [start, end], times, boxes


def viou(pred: dict | None, solution: dict) -> float:
    """The sample's vIoU over the sampled frames (module docstring); 0 for an unreadable interval."""
    _, times, gold = _gold(solution)
    in_gold = {i for i, b in enumerate(gold) if b is not None}
    if pred is None or pred["interval"] is None:
        return 0.0
    in_pred = frames_inside(times, pred["interval"])
    boxes = pred["boxes"] or []
    inter = sum(box_iou(boxes[k], gold[i]) for k, i in enumerate(in_pred) if i in in_gold and k < len(boxes))
    union = len(in_gold | set(in_pred))
    return inter / union if union else 0.0


def tiou(pred: dict | None, solution: dict) -> float:
    interval, _, _ = _gold(solution)
    return interval_iou(pred["interval"], interval) if pred is not None and pred["interval"] is not None else 0.0


def _valid_box(box) -> bool:
    x0, y0, x1, y1 = box
    return 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def _format_ok(text: str, solution: dict, think: bool) -> bool:
    """The exact layout, a readable interval and one valid box per listed frame inside it."""
    blocks = layout(text, format_tags(think, *ANSWER_TAGS))
    if blocks is None:
        return False
    interval, boxes = parse_interval(blocks[-2]), parse_boxes(blocks[-1])
    if interval is None or boxes is None:
        return False
    _, times, _ = _gold(solution)
    return len(boxes) == len(frames_inside(times, interval)) and all(_valid_box(b) for b in boxes)


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    pred = parse(text)
    return {"format": float(_format_ok(text, solution, think)), "tiou": tiou(pred, solution),
            "viou": viou(pred, solution)}


def sample_metrics(text: str, solution: dict, protocol: str = "ours") -> dict[str, Any]:
    pred = parse(text, protocol)
    parsed = pred is not None and pred["interval"] is not None and pred["boxes"] is not None
    return {"tiou": tiou(pred, solution), "viou": viou(pred, solution), "parsed": parsed}


def terms(rows: list[dict]) -> Terms:
    """m_tIoU, m_vIoU (means over queries, unparsable = 0), vIoU@R = fraction of queries with vIoU > R (strictly,
    as TubeDETR's and CG-STVG's hcstvg_eval.py count) and parse_rate (see common.ratio_metrics)."""
    vious = [float(r["viou"]) for r in rows]
    out: Terms = {"m_tIoU": ([float(r["tiou"]) for r in rows], None), "m_vIoU": (vious, None)}
    for t in THRESHOLDS:
        out[f"vIoU@{t}"] = ([float(v > t) for v in vious], None)
    out["parse_rate"] = ([float(r["parsed"]) for r in rows], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))


# ---------------------------------------------------------------- annotations and frames


def load_annotations(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """HC-STVG v1/v2 annotation file -> (samples, rejected); see stages/tasks/stvg/hcstvg.py."""
    return hcstvg.load(path, policy)


def bind_frames(sample: dict, meta: dict) -> dict:
    """Sampled frames -> problem frame_times and duration, solution boxes per sampled frame (hcstvg.bind)."""
    return hcstvg.bind(sample, meta)


def synthesize(p, root) -> dict:
    """Synthetic STVG videos + an HC-STVG annotation file under root (stages/tasks/stvg/synthetic.py)."""
    # imported here: the synthetic-video code imports stages.params, which imports this registry
    from .synthetic import synthesize as write

    return write(p, root)


# ---------------------------------------------------------------- supervised targets and blind answers


def target_text(solution: dict, think: bool = True) -> str:
    """The answer in the prompt's layout: the interval, then the solution's box of each frame inside it."""
    interval, times, boxes = _gold(solution)
    inside = frames_inside(times, interval)
    listed = ", ".join(_box_text(boxes[i]) for i in inside)
    head = target_head(think)
    return f"{head}<answer>{_t(interval[0])} to {_t(interval[1])}</answer> <boxes>[{listed}]</boxes>"


def _answer(interval: list[float], box: list[float], row: dict) -> dict:
    """A solution-shaped answer: `box` at every listed frame (the prompt's, which the model sees) inside `interval`."""
    times = [float(t) for t in row["problem"]["frame_times"]]
    inside = set(frames_inside(times, interval))
    return {"timestamps": interval, "frame_times": times,
            "boxes": [list(box) if i in inside else None for i in range(len(times))]}


def _duration(row: dict) -> float:
    return float(row["problem"].get("duration") or 1.0)


def prior_solution(row: dict, rng: random.Random) -> dict:
    """A random interval on the 0.25 s grid and a centred box of random size at each frame inside it."""
    last = max(int(_duration(row) * 4) / 4, 0.5)
    a, b = sorted(round(rng.uniform(0, last) * 4) / 4 for _ in range(2))
    a = min(a, last - 0.5)
    half = round(rng.uniform(0.1, 0.4), 2)
    return _answer([a, min(max(b, a + 0.5), last)], [0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half], row)


def blind_fit(train_rows: list[dict], think: bool) -> dict:
    """The best video-blind answer on the training rows: the interval (as fractions of the duration, 0.05 grid)
    with the highest mean tIoU, and the mean gold box. `think` does not change it (JSON-able)."""
    rows = [r for r in train_rows if r["task"] == NAME]
    gold_boxes = [b for r in rows for b in r["solution"]["boxes"] if b is not None]
    box = [round(mean([b[k] for b in gold_boxes]), 3) for k in range(4)] if gold_boxes else [0.25, 0.25, 0.75, 0.75]
    if not rows:
        return {"fraction": [0.0, 1.0], "box": box}

    def mean_tiou(a: float, b: float) -> float:
        return mean([interval_iou([a * _duration(r), b * _duration(r)], r["solution"]["timestamps"]) for r in rows])

    a, b = max(((a, b) for a in BLIND_GRID for b in BLIND_GRID if b > a), key=lambda ab: mean_tiou(*ab))
    return {"fraction": [a, b], "box": box}


def blind_solution(fit: dict, row: dict) -> dict:
    a, b = fit["fraction"]
    d = _duration(row)
    return _answer([round(a * d, 2), round(b * d, 2)], fit["box"], row)
