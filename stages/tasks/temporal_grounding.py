"""Temporal grounding (`tg`, Charades-STA style): when does "<sentence>" happen? Answer "start to end" seconds.

problem  {"sentence": str, "duration": float}
solution {"timestamps": [start, end]}  (seconds)
"""
from __future__ import annotations

import math
import random
import re
from typing import Any

from stages.datasets import annotations as ann

from .common import (
    NUM,
    Terms,
    check_protocol,
    extract_block,
    format_tags,
    interval_iou,
    layout,
    prior_interval,
    ratio_metrics,
    tail,
    target_head,
    two_decimals,
)

NAME = "tg"
PARTS = ("format", "iou")
HEADLINE = "mIoU"
PLOT_IOU_FIELD = "iou"
INPUT = "video"
PROBLEM_FIELDS = ("sentence", "duration")
THRESHOLDS = (0.3, 0.5, 0.7)

_UNIT = r"(?:\s{0,4}(?:seconds?|secs?|s)\b)?"
# "a to b" / "a and b"; a number starts after no digit, dot or minus (so "-3" and the tail of "1234567890"
# are not read as numbers) and does not continue into more digits.
_PAIR = re.compile(
    rf"(?<![\d.\-])({NUM})(?!\.?\d){_UNIT}\s{{0,8}}(?:to|and)\s{{0,8}}({NUM})(?!\.?\d)", re.IGNORECASE
)


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {**problem, "sentence": problem["sentence"], "duration": float(problem["duration"])}


def parse(text: str, protocol: str = "ours") -> list[float] | None:
    """The last "a to b" (or "a and b") pair of non-negative decimals in the last <answer> block.

    Upstream accepted start > end and its eval scripts parsed differently from its reward (reference section 8,
    defect 4); we reject start > end (None, so reward 0) and this is the one parser used by training and
    evaluation. protocol="upstream" reads the answer as VideoChat-R1's evaluation does (parse_upstream).
    """
    if check_protocol(protocol) == "upstream":
        return parse_upstream(text)
    block = extract_block(text, "answer")
    if block is None:
        return None
    last = None
    for last in _PAIR.finditer(block):
        pass
    if last is None:
        return None
    start, end = float(last.group(1)), float(last.group(2))
    return [start, end] if start <= end else None


# VideoChat-R1 src_eval/evaluate_grounding.py, parse_timestamp_output: the last match of
# r"(\d+\.?\d*) (to|and) (\d+\.?\d*)" in the WHOLE output (think text included, no tags needed), exactly one
# space on each side of a lowercase "to"/"and"; its fallback to the first <answer> block can never add a match.
# Read here in linear time: each " to "/" and " between a digit or dot and a digit is one candidate; its first
# number is the longest tail of the digit-and-dot run before it that reads as digits, an optional dot, digits
# ("1.2.3 to 4" gives 2.3, "6.22e-01 to 7" gives 1), its second the longest such run after it; a match may not
# start inside the previous one (re.findall's scan).
_UPSTREAM_JOIN = re.compile(r"(?<=[\d.]) (?:to|and) (?=\d)")
_UPSTREAM_NUM = re.compile(r"\d+\.?\d*")


def _upstream_left_number(text: str, end: int, floor: int) -> str | None:
    start = end
    while start > floor and (text[start - 1].isdecimal() or text[start - 1] == "."):
        start -= 1
    run = text[start:end]
    dot = run.rfind(".")
    if dot < 0:
        return run or None
    before = run[run.rfind(".", 0, dot) + 1 : dot]
    return before + run[dot:] if before else (run[dot + 1 :] or None)


def parse_upstream(text: str) -> list[float] | None:
    """[start, end] as VideoChat-R1's evaluation reads it (start > end kept: it scores 0 there too), else None."""
    text = tail(text)
    found, floor = None, 0
    for join in _UPSTREAM_JOIN.finditer(text):
        if join.start() <= floor:
            continue
        left = _upstream_left_number(text, join.start(), floor)
        if left is None:
            continue
        right = _UPSTREAM_NUM.match(text, join.end())
        found, floor = (left, right.group(0)), right.end()
    if found is None:
        return None
    start, end = float(found[0]), float(found[1])
    return [start, end] if math.isfinite(start) and math.isfinite(end) else None


def _gold(solution: dict) -> list[float]:
    start, end = (float(x) for x in solution["timestamps"])
    return [start, end]


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    gold = _gold(solution)
    pred = parse(text)
    return {
        "format": float(layout(text, format_tags(think)) is not None),
        "iou": interval_iou(pred, gold) if pred is not None else 0.0,
    }


def sample_metrics(text: str, solution: dict, protocol: str = "ours") -> dict[str, Any]:
    """IoU of the answer under a scoring protocol: upstream's IoU of an inverted pair is 0, as interval_iou's."""
    pred = parse(text, protocol)
    return {"iou": interval_iou(pred, _gold(solution)) if pred is not None else 0.0, "parsed": pred is not None}


def terms(rows: list[dict]) -> Terms:
    """mIoU over queries (unparsable = 0) and R@m = fraction of queries with IoU >= m (see common.ratio_metrics)."""
    ious = [float(r["iou"]) for r in rows]
    out: Terms = {"mIoU": (ious, None), "parse_rate": ([float(r["parsed"]) for r in rows], None)}
    for m in THRESHOLDS:
        out[f"R@{m}"] = ([float(iou >= m) for iou in ious], None)
    return out


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))


# ---------------------------------------------------------------- annotations


def load_annotations(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """Charades-STA / ActivityNet-Grounding JSON, {video_id: {duration, timestamps, sentences}} -> samples with ids
    `<video_id>#<sentence_index>`; an interval ending after the video is clipped or rejected by `policy`."""
    data, source = ann.load_json(path), path
    samples, rejected = [], []
    if not isinstance(data, dict):
        return [], [ann.reject(source, source, "Charades-STA file must be a JSON object keyed by video id")]
    seen = set()
    for vid, entry in getattr(data, "pairs", data.items()):
        try:
            if vid in seen:
                raise ValueError("duplicate video id (the key repeats in the file)")
            seen.add(vid)
            if not isinstance(entry, dict):
                raise ValueError("video entry is not an object")
            duration = ann.duration(ann.field(entry, "duration"))
            stamps, sentences = ann.field(entry, "timestamps"), ann.field(entry, "sentences")
            if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
                raise ValueError("timestamps and sentences are not two lists of the same length")
        except ValueError as e:
            rejected.append(ann.reject(vid, source, f"video entry malformed: {e}"))
            continue
        for i, (ts, sentence) in enumerate(zip(stamps, sentences)):
            sid = f"{vid}#{i}"
            try:
                samples.append({
                    "id": sid, "task": NAME, "video_id": str(vid),
                    "problem": {"sentence": ann.text(sentence, "sentence"), "duration": duration},
                    "solution": {"timestamps": ann.interval(ts, duration, policy)},
                })
            except ValueError as e:
                rejected.append(ann.reject(sid, source, str(e)))
    return samples, rejected


# ---------------------------------------------------------------- SFT targets and blind answers


def target_text(solution: dict, think: bool = True) -> str:
    s, e = solution["timestamps"]
    return f"{target_head(think)}<answer>{two_decimals(s)} to {two_decimals(e)}</answer>"


def prior_solution(row: dict, rng: random.Random) -> dict:
    return {"timestamps": prior_interval(row["problem"], rng)}


def _duration(row: dict) -> float:
    return float(row["problem"].get("duration") or 1.0)


def best_fraction(rows: list[dict], truth, think: bool) -> list[float]:
    """The one interval, as fractions [a, b] of each video's duration on a 0.05 grid, of the highest mean IoU with
    truth(row) over the rows (also gqa's blind evidence); [0, 1] when there are no rows."""
    if not rows:
        return [0.0, 1.0]
    grid = [i / 20 for i in range(21)]

    def mean_iou(a: float, b: float) -> float:
        texts = [target_text({"timestamps": [a * _duration(r), b * _duration(r)]}, think) for r in rows]
        return sum(score(t, {"timestamps": truth(r)}, think)["iou"] for t, r in zip(texts, rows)) / len(rows)

    return list(max(((a, b) for a in grid for b in grid if b > a), key=lambda ab: mean_iou(*ab)))


def blind_fit(train_rows: list[dict], think: bool) -> list[float]:
    return best_fraction(train_rows, lambda r: r["solution"]["timestamps"], think)


def fraction_interval(fraction: list[float], row: dict) -> list[float]:
    a, b = fraction
    return [round(a * _duration(row), 2), round(b * _duration(row), 2)]


def blind_solution(fit: list[float], row: dict) -> dict:
    return {"timestamps": fraction_interval(fit, row)}
