"""Adapters from the upstream annotation formats (reference section 2) to task samples.

Each adapter returns (samples, rejected): a sample is {"id", "task", "video_id", "problem", "solution"}; a
rejection is {"id", "source", "reason"}. Sample ids are deterministic: Charades-STA `<video_id>#<sentence_index>`,
NExT-GQA its `id`, GOT-10k the sequence folder name, multiple-choice QA its `id`.
"""
from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?")


def load_json(path: str):
    """Read an annotation file; malformed JSON or non-UTF-8 text raises ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from e


def video_id_of(path: str) -> str:
    """`1104/4882821564.mp4` -> `4882821564`; a frame folder path -> its folder name."""
    return PurePosixPath(str(path).replace("\\", "/").rstrip("/")).stem


def _reject(item_id, source, reason):
    return {"id": str(item_id), "source": source, "reason": reason}


def _interval(s, e, duration, policy: str):
    """Validate one [s, e] in seconds; returns (interval, None) or (None, reason)."""
    try:
        s, e = float(s), float(e)
    except (TypeError, ValueError):
        return None, f"interval [{s}, {e}] is not numeric"
    if s >= e:
        return None, f"interval start {s} >= end {e}"
    if duration is not None and (s < 0 or e > duration):
        if policy == "reject":
            return None, f"interval [{s}, {e}] outside [0, {duration}]"
        s, e = max(0.0, s), min(float(duration), e)
        if s >= e:
            return None, f"interval [{s}, {e}] empty after clipping to [0, {duration}]"
    return [round(s, 3), round(e, 3)], None


def _options_letter(options, answer):
    letters = []
    for o in options:
        m = LETTER.match(str(o))
        letters.append(m.group(1).upper() if m else None)
    m = LETTER.match(str(answer or ""))
    letter = m.group(1).upper() if m else None
    if letter is None or letter not in letters:
        return None, f"answer {answer!r} is not among the option letters {[x for x in letters if x]}"
    return letter, None


def charades_sta(data, source: str, policy: str = "clip"):
    """Charades-STA / ActivityNet-Grounding: {vid: {duration, timestamps, sentences}} -> tg samples."""
    samples, rejected = [], []
    if not isinstance(data, dict):
        return [], [_reject(source, source, "Charades-STA file must be a JSON object keyed by video id")]
    for vid, ann in data.items():
        try:
            duration = float(ann["duration"])
            pairs = list(zip(ann["timestamps"], ann["sentences"], strict=True))
        except (KeyError, TypeError, ValueError) as e:
            rejected.append(_reject(vid, source, f"video entry malformed: {type(e).__name__}: {e}"))
            continue
        for i, (ts, sentence) in enumerate(pairs):
            sid = f"{vid}#{i}"
            if not isinstance(ts, (list, tuple)) or len(ts) != 2:
                rejected.append(_reject(sid, source, f"timestamp {ts!r} is not [start, end]"))
                continue
            iv, why = _interval(ts[0], ts[1], duration, policy)
            if why:
                rejected.append(_reject(sid, source, why))
                continue
            samples.append({
                "id": sid, "task": "tg", "video_id": str(vid),
                "problem": {"sentence": str(sentence).strip(), "duration": duration},
                "solution": {"timestamps": iv},
            })
    return samples, rejected


def nextgqa(data, source: str, policy: str = "clip"):
    """NExT-GQA list -> gqa samples (answer letter + evidence intervals)."""
    samples, rejected = [], []
    for k, item in enumerate(data if isinstance(data, list) else []):
        sid = str(item.get("id", f"{source}[{k}]")) if isinstance(item, dict) else f"{source}[{k}]"
        try:
            duration = float(item["duration"])
            options = list(item["options"])
            letter, why = _options_letter(options, item["answer"])
            if why:
                raise ValueError(why)
            glue = []
            for s, e in item["glue"]:
                iv, why = _interval(s, e, duration, policy)
                if why:
                    raise ValueError(f"evidence {why}")
                glue.append(iv)
            if not glue:
                raise ValueError("no evidence interval")
            samples.append({
                "id": sid, "task": "gqa", "video_id": video_id_of(item["video"]),
                "problem": {"question": str(item["question"]), "options": options, "duration": duration},
                "solution": {"answer": letter, "glue": glue},
            })
        except (KeyError, TypeError, ValueError) as e:
            rejected.append(_reject(sid, source, str(e) if isinstance(e, ValueError) else f"missing field {e}"))
    if not isinstance(data, list):
        rejected.append(_reject(source, source, "NExT-GQA file must be a JSON list"))
    return samples, rejected


def got10k(data, source: str, num_boxes: int = 8):
    """VideoChat-R1's GOT-10k list {path, object, gt: num_boxes normalised xyxy} -> tracking samples."""
    samples, rejected = [], []
    for k, item in enumerate(data if isinstance(data, list) else []):
        sid = video_id_of(item.get("path", f"{source}[{k}]")) if isinstance(item, dict) else f"{source}[{k}]"
        try:
            boxes = [[float(v) for v in b] for b in item["gt"]]
            if len(boxes) != num_boxes:
                raise ValueError(f"{len(boxes)} boxes, expected {num_boxes}")
            for b in boxes:
                if len(b) != 4:
                    raise ValueError(f"box {b} does not have 4 coordinates")
                if not all(0.0 <= v <= 1.0 for v in b):
                    raise ValueError(f"box {b} has coordinates outside [0, 1]")
                if b[0] >= b[2] or b[1] >= b[3]:
                    raise ValueError(f"box {b} has x0 >= x1 or y0 >= y1")
            samples.append({
                "id": sid, "task": "tracking", "video_id": sid,
                "problem": {"object": str(item["object"]), "init_box": boxes[0]},
                "solution": {"boxes": boxes},
            })
        except (KeyError, TypeError, ValueError) as e:
            rejected.append(_reject(sid, source, str(e) if isinstance(e, ValueError) else f"missing field {e}"))
    if not isinstance(data, list):
        rejected.append(_reject(source, source, "GOT-10k file must be a JSON list"))
    return samples, rejected


def mcq(data, source: str):
    """Multiple-choice QA list {id, video, question, options, answer} -> qa samples."""
    samples, rejected = [], []
    for k, item in enumerate(data if isinstance(data, list) else []):
        sid = str(item.get("id", f"{source}[{k}]")) if isinstance(item, dict) else f"{source}[{k}]"
        try:
            options = list(item["options"])
            letter, why = _options_letter(options, item["answer"])
            if why:
                raise ValueError(why)
            samples.append({
                "id": sid, "task": "qa", "video_id": video_id_of(item["video"]),
                "problem": {"question": str(item["question"]), "options": options},
                "solution": {"answer": letter},
            })
        except (KeyError, TypeError, ValueError) as e:
            rejected.append(_reject(sid, source, str(e) if isinstance(e, ValueError) else f"missing field {e}"))
    if not isinstance(data, list):
        rejected.append(_reject(source, source, "multiple-choice QA file must be a JSON list"))
    return samples, rejected


def load_task(task: str, path: str, policy: str = "clip"):
    """Load one task's annotation file -> (samples, rejected). Unreadable files raise ValueError."""
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
