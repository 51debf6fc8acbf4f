"""Adapters from the upstream annotation formats (reference section 2) to task samples, with validation.

Each adapter returns (samples, rejected): a sample is {"id", "task", "video_id", "problem", "solution"}; a
rejection is {"id", "source", "reason"}. Sample ids are deterministic: Charades-STA `<video_id>#<sentence_index>`,
NExT-GQA its `id`, GOT-10k the sequence folder name, multiple-choice QA its `id`.

Formats: Charades-STA / ActivityNet-Grounding JSON, NExT-GQA JSON, VideoChat-R1's GOT-10k JSON, the native GOT-10k
layout (a folder of sequence folders with groundtruth.txt; see got10k_native), multiple-choice QA JSON.
Rejected, each with its reason: an item that is not an object or lacks a field, an interval ending after the
video (or clipped to its end, by policy), a negative start (under either policy), start >= end, non-finite
numbers, a box with coordinates outside [0, 1] or x0 >= x1, the wrong number of boxes, an answer letter not among
the options, repeated option letters, empty or invalid text (lone surrogates), a duplicate id. A whole file that is malformed JSON or not UTF-8 raises ValueError naming it.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath

from PIL import Image

from stages.video.budget import uniform_indices

LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?")
FRAME_SUFFIXES = (".jpg", ".jpeg")
OBJECT_CLASS = re.compile(r"^\s*object_class\s*[:=]\s*(.+?)\s*$", re.MULTILINE)


class Pairs(dict):
    """A JSON object that remembers its keys in order, repeats included (json keeps only the last one)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def load_json(path: str):
    """Read an annotation file; malformed JSON or non-UTF-8 text raises ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return json.loads(raw.decode("utf-8"), object_pairs_hook=Pairs)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from e


def video_id_of(path: str) -> str:
    """`1104/4882821564.mp4` -> `4882821564`; a frame folder path -> its folder name."""
    return PurePosixPath(str(path).replace("\\", "/").rstrip("/")).stem


def _reject(item_id, source, reason):
    return {"id": str(item_id), "source": source, "reason": reason}


# ---------------------------------------------------------------- field checks (raise ValueError with the reason)


def _text(value, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} is not text: {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # "\udc80" escapes decode to lone surrogates that no UTF-8 file can hold
        raise ValueError(f"{field} is not valid Unicode text ({e.reason})") from e
    if not value.strip():
        raise ValueError(f"{field} is empty")
    return value.strip()


def _number(value, field: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{field} is not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} is not a number: {value!r:.60}") from None
    if not math.isfinite(x):
        raise ValueError(f"{field} is not finite: {value!r}")
    return x


def _duration(value) -> float:
    d = _number(value, "duration")
    if d <= 0:
        raise ValueError(f"duration {d} is not positive")
    return d


def _interval(pair, duration: float, policy: str, what: str = "interval") -> list[float]:
    """One [s, e] in seconds inside [0, duration]. An end after the video is clipped to the duration or rejected,
    by policy (annotations and the file's measured duration often disagree by a little); a negative start is
    rejected under either policy: no video starts before 0, so it is a broken annotation, not a length mismatch."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"{what} {pair!r:.60} is not [start, end]")
    s, e = _number(pair[0], f"{what} start"), _number(pair[1], f"{what} end")
    if s >= e:
        raise ValueError(f"{what} start {s} >= end {e}")
    if s < 0:
        raise ValueError(f"{what} start {s} is negative (before the video starts)")
    if e > duration:
        if policy == "reject":
            raise ValueError(f"{what} [{s}, {e}] outside [0, {duration}]")
        e = duration
        if s >= e:
            raise ValueError(f"{what} [{s}, {pair[1]}] empty after clipping to [0, {duration}]")
    return [round(s, 3), round(e, 3)]


def _options_letter(options, answer) -> tuple[list[str], str]:
    """The options as text and the answer's letter, which must be one of the options' letters."""
    if not isinstance(options, list) or len(options) < 2:
        raise ValueError(f"options must be a list of at least 2, got {options!r:.80}")
    options = [_text(o, f"option {k}") for k, o in enumerate(options)]
    letters = [m.group(1).upper() if (m := LETTER.match(o)) else None for o in options]
    present = [x for x in letters if x]
    if len(set(present)) != len(present):
        raise ValueError(f"option letters repeat: {present}")
    m = LETTER.match(answer) if isinstance(answer, str) else None
    letter = m.group(1).upper() if m else None
    if letter is None or letter not in present:
        raise ValueError(f"answer {answer!r} is not among the option letters {present}")
    return options, letter


def _boxes(gt, num_boxes: int) -> list[list[float]]:
    if not isinstance(gt, list):
        raise ValueError(f"gt is not a list of boxes: {gt!r:.60}")
    if len(gt) != num_boxes:
        raise ValueError(f"{len(gt)} boxes, expected {num_boxes}")
    boxes = []
    for k, b in enumerate(gt):
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ValueError(f"box {k} {b!r:.60} does not have 4 coordinates")
        box = [_number(v, f"box {k} coordinate") for v in b]
        if not all(0.0 <= v <= 1.0 for v in box):
            raise ValueError(f"box {k} {box} has coordinates outside [0, 1]")
        if box[0] >= box[2] or box[1] >= box[3]:
            raise ValueError(f"box {k} {box} has x0 >= x1 or y0 >= y1")
        boxes.append(box)
    return boxes


def _field(item, name: str):
    if name not in item:
        raise ValueError(f"missing field '{name}'")
    return item[name]


class _Ids:
    """First occurrence of an id wins; later ones are rejected."""

    def __init__(self):
        self.first: dict[str, int] = {}

    def check(self, sid: str, k: int) -> None:
        if sid in self.first:
            raise ValueError(f"duplicate id (first at item {self.first[sid]})")
        self.first[sid] = k


def _list_items(data, source: str, what: str):
    """(k, item) of a JSON list, or a file-level rejection when it is not one."""
    if not isinstance(data, list):
        return None, [_reject(source, source, f"{what} file must be a JSON list")]
    return list(enumerate(data)), []


def _item_id(item, k: int, source: str, key: str = "id") -> str:
    if isinstance(item, dict) and isinstance(item.get(key), (str, int)) and str(item.get(key)).strip():
        return str(item[key])
    return f"{source}[{k}]"


def _id_items(data, source: str, what: str, sample):
    """A JSON list of objects keyed by `id` -> (samples, rejected): an item that is not an object or repeats an id
    is rejected, then sample(item, sid) builds the sample or raises ValueError with the reason to reject it."""
    items, rejected = _list_items(data, source, what)
    samples, ids = [], _Ids()
    for k, item in items or []:
        sid = _item_id(item, k, source)
        try:
            if not isinstance(item, dict):
                raise ValueError("item is not a JSON object")
            ids.check(sid, k)
            samples.append(sample(item, sid))
        except ValueError as e:
            rejected.append(_reject(sid, source, str(e)))
    return samples, rejected


# ---------------------------------------------------------------- adapters


def charades_sta(data, source: str, policy: str = "clip"):
    """Charades-STA / ActivityNet-Grounding: {vid: {duration, timestamps, sentences}} -> tg samples."""
    samples, rejected = [], []
    if not isinstance(data, dict):
        return [], [_reject(source, source, "Charades-STA file must be a JSON object keyed by video id")]
    seen = set()
    for vid, ann in getattr(data, "pairs", data.items()):
        try:
            if vid in seen:
                raise ValueError("duplicate video id (the key repeats in the file)")
            seen.add(vid)
            if not isinstance(ann, dict):
                raise ValueError("video entry is not an object")
            duration = _duration(_field(ann, "duration"))
            stamps, sentences = _field(ann, "timestamps"), _field(ann, "sentences")
            if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
                raise ValueError("timestamps and sentences are not two lists of the same length")
        except ValueError as e:
            rejected.append(_reject(vid, source, f"video entry malformed: {e}"))
            continue
        for i, (ts, sentence) in enumerate(zip(stamps, sentences)):
            sid = f"{vid}#{i}"
            try:
                samples.append({
                    "id": sid, "task": "tg", "video_id": str(vid),
                    "problem": {"sentence": _text(sentence, "sentence"), "duration": duration},
                    "solution": {"timestamps": _interval(ts, duration, policy)},
                })
            except ValueError as e:
                rejected.append(_reject(sid, source, str(e)))
    return samples, rejected


def nextgqa(data, source: str, policy: str = "clip"):
    """NExT-GQA list -> gqa samples (answer letter + evidence intervals)."""

    def sample(item, sid):
        duration, glue = _duration(_field(item, "duration")), _field(item, "glue")
        options, letter = _options_letter(_field(item, "options"), _field(item, "answer"))
        if not isinstance(glue, list) or not glue:
            raise ValueError("no evidence interval")
        return {
            "id": sid, "task": "gqa", "video_id": video_id_of(_text(_field(item, "video"), "video")),
            "problem": {"question": _text(_field(item, "question"), "question"), "options": options,
                        "duration": duration},
            "solution": {"answer": letter, "glue": [_interval(iv, duration, policy, "evidence") for iv in glue]},
        }

    return _id_items(data, source, "NExT-GQA", sample)


def got10k(data, source: str, num_boxes: int = 8):
    """VideoChat-R1's GOT-10k list {path, object, gt: num_boxes normalised xyxy} -> tracking samples."""
    items, rejected = _list_items(data, source, "GOT-10k")
    samples, ids = [], _Ids()
    for k, item in items or []:
        path = item.get("path") if isinstance(item, dict) else None
        sid = video_id_of(path) if isinstance(path, str) and path.strip() else f"{source}[{k}]"
        try:
            if not isinstance(item, dict):
                raise ValueError("item is not a JSON object")
            _text(_field(item, "path"), "path")
            ids.check(sid, k)
            boxes = _boxes(_field(item, "gt"), num_boxes)
            samples.append(_tracking_sample(sid, _text(_field(item, "object"), "object"), boxes))
        except ValueError as e:
            rejected.append(_reject(sid, source, str(e)))
    return samples, rejected


def _tracking_sample(sid: str, obj: str, boxes: list[list[float]]) -> dict:
    return {"id": sid, "task": "tracking", "video_id": sid, "problem": {"object": obj, "init_box": boxes[0]},
            "solution": {"boxes": boxes}}


def mcq(data, source: str):
    """Multiple-choice QA list {id, video, question, options, answer} -> qa samples."""

    def sample(item, sid):
        options, letter = _options_letter(_field(item, "options"), _field(item, "answer"))
        return {
            "id": sid, "task": "qa", "video_id": video_id_of(_text(_field(item, "video"), "video")),
            "problem": {"question": _text(_field(item, "question"), "question"), "options": options},
            "solution": {"answer": letter},
        }

    return _id_items(data, source, "multiple-choice QA", sample)


# ---------------------------------------------------------------- native GOT-10k layout


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"{what} unreadable: {e.strerror or e}") from e


def _native_sequence(folder: Path, num_boxes: int) -> dict:
    """One GOT-10k sequence folder -> a tracking sample (ValueError with the reason)."""
    frames = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise ValueError("no JPEG frames")
    if not (folder / "groundtruth.txt").is_file():
        raise ValueError("no groundtruth.txt")
    lines = [ln for ln in _read_text(folder / "groundtruth.txt", "groundtruth.txt").splitlines() if ln.strip()]
    if len(lines) != len(frames):
        raise ValueError(f"groundtruth.txt has {len(lines)} boxes for {len(frames)} frames")
    absent = []
    if (folder / "absence.label").is_file():
        absent = [ln.strip() == "1" for ln in _read_text(folder / "absence.label", "absence.label").splitlines()]
    meta = _read_text(folder / "meta_info.ini", "meta_info.ini") if (folder / "meta_info.ini").is_file() else ""
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
        x, y, w, h = (_number(v, f"groundtruth.txt line {i + 1}") for v in parts)
        if w <= 0 or h <= 0:
            raise ValueError(f"groundtruth.txt line {i + 1}: empty box {w}x{h}")
        xyxy = [x / width, y / height, (x + w) / width, (y + h) / height]
        boxes.append([round(min(max(v, 0.0), 1.0), 3) for v in xyxy])  # boxes may reach past the frame edge
    return _tracking_sample(folder.name, _text(m.group(1), "object_class"), _boxes(boxes, num_boxes))


def got10k_native(root: str, num_boxes: int = 8):
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
            rejected.append(_reject(folder.name, str(folder), str(e)))
        except OSError as e:
            rejected.append(_reject(folder.name, str(folder), f"unreadable: {e}"))
    return samples, rejected


def load_task(task: str, path: str, policy: str = "clip"):
    """Load one task's annotations -> (samples, rejected). Unreadable files raise ValueError.

    tracking accepts a JSON file (VideoChat-R1) or a folder in the native GOT-10k layout."""
    if task == "tracking" and Path(path).is_dir():
        return got10k_native(path)
    data = load_json(path)
    if task == "tg":
        return charades_sta(data, path, policy)
    if task == "gqa":
        return nextgqa(data, path, policy)
    if task == "tracking":
        return got10k(data, path)
    if task == "qa":
        return mcq(data, path)
    raise ValueError(f"unknown task {task!r}")
