"""Shared parsing helpers for the task modules' annotation adapters (stages/tasks/<task>.py, load_annotations).

An adapter returns (samples, rejected): a sample is {"id", "task", "video_id", "problem", "solution"}; a
rejection is {"id", "source", "reason"}. The field checks below raise ValueError with the reason an item is
rejected: an item that is not an object or lacks a field, an interval ending after the video (or clipped to its
end, by policy), a negative start (under either policy), start >= end, non-finite numbers, a box with coordinates
outside [0, 1] or x0 >= x1, the wrong number of boxes, an answer letter not among the options, repeated option
letters, empty or invalid text (lone surrogates), a duplicate id. A whole file that is malformed JSON or not
UTF-8 raises ValueError naming it (load_json).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath

LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?")


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


def reject(item_id, source, reason):
    return {"id": str(item_id), "source": source, "reason": reason}


# ---------------------------------------------------------------- field checks (raise ValueError with the reason)


def text(value, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} is not text: {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # "\udc80" escapes decode to lone surrogates that no UTF-8 file can hold
        raise ValueError(f"{field} is not valid Unicode text ({e.reason})") from e
    if not value.strip():
        raise ValueError(f"{field} is empty")
    return value.strip()


def number(value, field: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{field} is not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} is not a number: {value!r:.60}") from None
    if not math.isfinite(x):
        raise ValueError(f"{field} is not finite: {value!r}")
    return x


def duration(value) -> float:
    d = number(value, "duration")
    if d <= 0:
        raise ValueError(f"duration {d} is not positive")
    return d


def interval(pair, duration: float, policy: str, what: str = "interval") -> list[float]:
    """One [s, e] in seconds inside [0, duration]. An end after the video is clipped to the duration or rejected,
    by policy (annotations and the file's measured duration often disagree by a little); a negative start is
    rejected under either policy: no video starts before 0, so it is a broken annotation, not a length mismatch."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"{what} {pair!r:.60} is not [start, end]")
    s, e = number(pair[0], f"{what} start"), number(pair[1], f"{what} end")
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


def options_letter(options, answer) -> tuple[list[str], str]:
    """The options as text and the answer's letter, which must be one of the options' letters."""
    if not isinstance(options, list) or len(options) < 2:
        raise ValueError(f"options must be a list of at least 2, got {options!r:.80}")
    options = [text(o, f"option {k}") for k, o in enumerate(options)]
    letters = [m.group(1).upper() if (m := LETTER.match(o)) else None for o in options]
    present = [x for x in letters if x]
    if len(set(present)) != len(present):
        raise ValueError(f"option letters repeat: {present}")
    m = LETTER.match(answer) if isinstance(answer, str) else None
    letter = m.group(1).upper() if m else None
    if letter is None or letter not in present:
        raise ValueError(f"answer {answer!r} is not among the option letters {present}")
    return options, letter


def boxes(gt, num_boxes: int) -> list[list[float]]:
    if not isinstance(gt, list):
        raise ValueError(f"gt is not a list of boxes: {gt!r:.60}")
    if len(gt) != num_boxes:
        raise ValueError(f"{len(gt)} boxes, expected {num_boxes}")
    out = []
    for k, b in enumerate(gt):
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ValueError(f"box {k} {b!r:.60} does not have 4 coordinates")
        box = [number(v, f"box {k} coordinate") for v in b]
        if not all(0.0 <= v <= 1.0 for v in box):
            raise ValueError(f"box {k} {box} has coordinates outside [0, 1]")
        if box[0] >= box[2] or box[1] >= box[3]:
            raise ValueError(f"box {k} {box} has x0 >= x1 or y0 >= y1")
        out.append(box)
    return out


def field(item, name: str):
    if name not in item:
        raise ValueError(f"missing field '{name}'")
    return item[name]


class Ids:
    """First occurrence of an id wins; later ones are rejected."""

    def __init__(self):
        self.first: dict[str, int] = {}

    def check(self, sid: str, k: int) -> None:
        if sid in self.first:
            raise ValueError(f"duplicate id (first at item {self.first[sid]})")
        self.first[sid] = k


def list_items(data, source: str, what: str):
    """(k, item) of a JSON list, or a file-level rejection when it is not one."""
    if not isinstance(data, list):
        return None, [reject(source, source, f"{what} file must be a JSON list")]
    return list(enumerate(data)), []


def item_id(item, k: int, source: str, key: str = "id") -> str:
    if isinstance(item, dict) and isinstance(item.get(key), (str, int)) and str(item.get(key)).strip():
        return str(item[key])
    return f"{source}[{k}]"


def id_items(data, source: str, what: str, sample):
    """A JSON list of objects keyed by `id` -> (samples, rejected): an item that is not an object or repeats an id
    is rejected, then sample(item, sid) builds the sample or raises ValueError with the reason to reject it."""
    items, rejected = list_items(data, source, what)
    samples, ids = [], Ids()
    for k, item in items or []:
        sid = item_id(item, k, source)
        try:
            if not isinstance(item, dict):
                raise ValueError("item is not a JSON object")
            ids.check(sid, k)
            samples.append(sample(item, sid))
        except ValueError as e:
            rejected.append(reject(sid, source, str(e)))
    return samples, rejected


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"{what} unreadable: {e.strerror or e}") from e
