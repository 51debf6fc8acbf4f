"""Single-object tracking (`tracking`, GOT-10k style): one box per sampled frame, normalised xyxy.

problem  {"object": str, "init_box": [x0, y0, x1, y1]}   (optional "num_boxes", default 8)
solution {"boxes": [[x0, y0, x1, y1], ... 8]}
The model must give exactly as many boxes as the annotation has (8 in VideoChat-R1). Upstream sampled 7 frames
but demanded 8 boxes (reference section 8, defect 5); the frame count is the extract stage's `tracking_frames`,
equal to the box count.
"""
from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

from stages.datasets import annotations as ann

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
    tail,
    target_head,
)

NAME = "tracking"
PARTS = ("format", "iou")
HEADLINE = "AO"
PLOT_IOU_FIELD = "miou"
INPUT = "frames"  # exactly as many frames as boxes, as its training sequences were sampled
PROBLEM_FIELDS = ("object", "init_box", "num_boxes")
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


_INNER_BOX = re.compile(r"[\[(][^\[\]()]*[\])]")


def part_spans(text: str, solution: dict) -> tuple[str, list[tuple[int, int]], list[float]] | None:
    """The `iou` reward part split over the boxes it averages: (part, the character span of each box in `text`,
    each box's IoU), or None when the answer does not give one box per annotated frame (its IoU part is then 0).
    Used by train.box_credit (stages/rl/box_credit.py) to give each box's tokens its own advantage."""
    gold = _gold(solution)
    block = extract_block(text, "answer")
    boxes = parse_tuples(block, 4, signed=True)
    if boxes is None or len(boxes) != len(gold):
        return None
    kept = tail(text)  # extract_block reads the tail: offsets are relative to it
    offset = len(text) - len(kept) + kept.rfind("<answer>", 0, kept.rfind("</answer>")) + len("<answer>")
    spans = [(offset + m.start(), offset + m.end()) for m in _INNER_BOX.finditer(block)]
    if len(spans) != len(gold):
        return None
    return "iou", spans, frame_ious(text, gold)


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


# ---------------------------------------------------------------- annotations

FRAME_SUFFIXES = (".jpg", ".jpeg")
OBJECT_CLASS = re.compile(r"^\s*object_class\s*[:=]\s*(.+?)\s*$", re.MULTILINE)


def load_annotations(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """A JSON file in VideoChat-R1's GOT-10k format (got10k) or a folder in the native GOT-10k layout
    (got10k_native). Boxes have no time interval, so `policy` changes nothing."""
    if Path(path).is_dir():
        return got10k_native(path)
    return got10k(ann.load_json(path), path)


def _sample(sid: str, obj: str, boxes: list[list[float]]) -> dict:
    return {"id": sid, "task": NAME, "video_id": sid, "problem": {"object": obj, "init_box": boxes[0]},
            "solution": {"boxes": boxes}}


def got10k(data, source: str, num_boxes: int = NUM_BOXES) -> tuple[list[dict], list[dict]]:
    """VideoChat-R1's GOT-10k list {path, object, gt: num_boxes normalised xyxy} -> samples with ids the sequence
    folder names."""
    items, rejected = ann.list_items(data, source, "GOT-10k")
    samples, ids = [], ann.Ids()
    for k, item in items or []:
        path = item.get("path") if isinstance(item, dict) else None
        sid = ann.video_id_of(path) if isinstance(path, str) and path.strip() else f"{source}[{k}]"
        try:
            if not isinstance(item, dict):
                raise ValueError("item is not a JSON object")
            ann.text(ann.field(item, "path"), "path")
            ids.check(sid, k)
            boxes = ann.boxes(ann.field(item, "gt"), num_boxes)
            samples.append(_sample(sid, ann.text(ann.field(item, "object"), "object"), boxes))
        except ValueError as e:
            rejected.append(ann.reject(sid, source, str(e)))
    return samples, rejected


def _native_sequence(folder: Path, num_boxes: int) -> dict:
    """One GOT-10k sequence folder -> a tracking sample (ValueError with the reason)."""
    # imported here: stages.video imports stages.params, which reads the task list from stages.tasks
    from PIL import Image

    from stages.video.budget import uniform_indices

    frames = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise ValueError("no JPEG frames")
    if not (folder / "groundtruth.txt").is_file():
        raise ValueError("no groundtruth.txt")
    lines = [ln for ln in ann.read_text(folder / "groundtruth.txt", "groundtruth.txt").splitlines() if ln.strip()]
    if len(lines) != len(frames):
        raise ValueError(f"groundtruth.txt has {len(lines)} boxes for {len(frames)} frames")
    absent = []
    if (folder / "absence.label").is_file():
        absent = [ln.strip() == "1" for ln in ann.read_text(folder / "absence.label", "absence.label").splitlines()]
    meta = ann.read_text(folder / "meta_info.ini", "meta_info.ini") if (folder / "meta_info.ini").is_file() else ""
    m = OBJECT_CLASS.search(meta)
    if not m:
        raise ValueError("no object name (meta_info.ini has no object_class)")
    try:
        with Image.open(frames[0]) as im:
            width, height = im.size
    except Exception as e:
        raise ValueError(f"first frame unreadable: {type(e).__name__}: {e}") from e
    boxes = []
    for i in uniform_indices(len(frames), num_boxes):
        if i < len(absent) and absent[i]:
            raise ValueError(f"target absent at sampled frame {i + 1} (absence.label)")
        parts = [x for x in re.split(r"[,\s]+", lines[i].strip()) if x]
        if len(parts) != 4:
            raise ValueError(f"groundtruth.txt line {i + 1} is not x,y,w,h: {lines[i]!r:.60}")
        x, y, w, h = (ann.number(v, f"groundtruth.txt line {i + 1}") for v in parts)
        if w <= 0 or h <= 0:
            raise ValueError(f"groundtruth.txt line {i + 1}: empty box {w}x{h}")
        xyxy = [x / width, y / height, (x + w) / width, (y + h) / height]
        boxes.append([round(min(max(v, 0.0), 1.0), 3) for v in xyxy])  # boxes may reach past the frame edge
    return _sample(folder.name, ann.text(m.group(1), "object_class"), ann.boxes(boxes, num_boxes))


def got10k_native(root: str, num_boxes: int = NUM_BOXES) -> tuple[list[dict], list[dict]]:
    """The GOT-10k layout: root/<sequence>/{00000001.jpg ..., groundtruth.txt (pixel x,y,w,h per frame),
    meta_info.ini (object_class), absence.label (optional)} -> tracking samples with num_boxes normalised xyxy
    boxes at frames round(linspace(0, N-1, num_boxes)), the frames stage extract_frames samples. Boxes are clipped
    to the frame; root may also be one sequence folder."""
    base = Path(root)
    folders = [base] if (base / "groundtruth.txt").is_file() else sorted(d for d in base.iterdir() if d.is_dir())
    samples, rejected = [], []
    for folder in folders:
        try:
            samples.append(_native_sequence(folder, num_boxes))
        except ValueError as e:
            rejected.append(ann.reject(folder.name, str(folder), str(e)))
        except OSError as e:
            rejected.append(ann.reject(folder.name, str(folder), f"unreadable: {e}"))
    return samples, rejected


def bind_frames(sample: dict, meta: dict) -> dict:
    """One box per sampled frame: a sequence whose frame count is not its box count cannot be scored."""
    if meta["num_frames"] != len(sample["solution"]["boxes"]):
        raise ValueError(f"{meta['num_frames']} frames but {len(sample['solution']['boxes'])} boxes")
    return sample


# ---------------------------------------------------------------- SFT targets and blind answers


def target_text(solution: dict, think: bool = True) -> str:
    boxes = ", ".join("[" + ", ".join(f"{v:.2f}" for v in b) + "]" for b in solution["boxes"])
    return f"{target_head(think)}<answer>[{boxes}]</answer>"


def _static(row: dict) -> dict:
    """A tracker that never moves: the first box on every frame."""
    return {"boxes": [list(row["problem"]["init_box"])] * len(row["solution"]["boxes"])}


def prior_solution(row: dict, rng: random.Random) -> dict:
    return _static(row)


def blind_fit(train_rows: list[dict], think: bool) -> None:
    return None  # the static tracker needs nothing from the training set


def blind_solution(fit: None, row: dict) -> dict:
    return _static(row)
