"""Parsing and geometry helpers shared by the task modules.

Model output is untrusted text, so the work per completion is bounded: only the last MAX_TEXT_CHARS are
examined, a tag block longer than MAX_BLOCK_CHARS counts as missing, numbers have at most 9 integer digits
(so float() never overflows) and 20 fraction digits (a float printed by Python has at most 17), and every regex
is linear (bounded repeats, no nested
ambiguous quantifiers). Nothing is ever eval'ed. A 1 MB adversarial completion costs milliseconds.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any, Iterable, Sequence

# A 1024-token completion is a few KB of text; 64 KiB leaves room for longer max_completion_length.
MAX_TEXT_CHARS = 64 * 1024
# An answer is a letter, a pair of times, 8 boxes (~300 chars) or a few spans: 4 KiB is generous.
MAX_BLOCK_CHARS = 4 * 1024

NUM = r"\d{1,9}(?:\.\d{1,20})?"  # non-negative decimal
SIGNED_NUM = r"-?" + NUM
_WS = re.compile(r"\s*")

# Scoring protocols (docs/tasks.md, "Two scoring protocols"): `ours` reads answers with the documented fixes below;
# `upstream` reads them the way VideoChat-R1's evaluation scripts (src_eval/evaluate_*.py) do. Both score
# NExT-GQA's IoP the official way (best gold segment) and keep the bounds above (MAX_TEXT_CHARS, MAX_BLOCK_CHARS,
# at most 9 integer digits).
PROTOCOLS = ("ours", "upstream")


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown scoring protocol {protocol!r}; known: {list(PROTOCOLS)}")
    return protocol


# ---------------------------------------------------------------- completions and tag blocks


def completion_text(completion: Any) -> str:
    """Text of a completion: a plain string or TRL's conversational form [{"role", "content"}, ...]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list) and completion:
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        content = (assistant or completion)[-1]
        content = content.get("content", "") if isinstance(content, dict) else content
        if isinstance(content, list):  # VLM content blocks: [{"type": "text", "text": ...}, ...]
            texts = (b.get("text") for b in content if isinstance(b, dict))
            return "".join(t for t in texts if isinstance(t, str))
        return content if isinstance(content, str) else ""
    return ""


def tail(text: str) -> str:
    """The part of a completion that parsers look at (answers come last)."""
    return text[-MAX_TEXT_CHARS:]


def extract_block(text: str | None, tag: str, last: bool = True) -> str | None:
    """Content of the last (or first) complete <tag>...</tag> block, or None (missing or too long)."""
    if not text:
        return None
    text = tail(text)
    open_, close = f"<{tag}>", f"</{tag}>"
    if last:
        end = text.rfind(close)
        start = text.rfind(open_, 0, end) if end >= 0 else -1
    else:
        start = text.find(open_)
        end = text.find(close, start + len(open_)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    content = text[start + len(open_) : end]
    return content if len(content) <= MAX_BLOCK_CHARS else None


def layout(text: str, tags: Sequence[str]) -> list[str] | None:
    """Contents of the blocks if the stripped text is exactly <t1>..</t1> <t2>..</t2> ... (whitespace between
    blocks allowed, each tag exactly once), else None.

    Upstream used a lazy regex under fullmatch, which also accepts repeated tags
    (`<answer>a</answer><answer>b</answer>` as one block); we require each tag once.
    """
    if len(text) > MAX_TEXT_CHARS:
        return None
    s = text.strip()
    if any(s.count(f"<{t}>") != 1 or s.count(f"</{t}>") != 1 for t in tags):
        return None
    contents, pos = [], 0
    for t in tags:
        open_, close = f"<{t}>", f"</{t}>"
        pos = _WS.match(s, pos).end()
        if not s.startswith(open_, pos):
            return None
        end = s.find(close, pos + len(open_))
        if end < 0:
            return None
        contents.append(s[pos + len(open_) : end])
        pos = end + len(close)
    return contents if pos == len(s) else None


def format_tags(think: bool, *answer_tags: str) -> tuple[str, ...]:
    """The block layout a prompt variant asks for: optional <think>, then the answer blocks."""
    return (("think",) if think else ()) + (answer_tags or ("answer",))


# ---------------------------------------------------------------- letters


# A capital A-G that is a token of its own: "(C)", "C.", "Option C"; not the B of "Because".
_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-G])(?![A-Za-z0-9])")
# A lone lowercase letter, the whole answer: "c", "(c)", "c."
_LONE_LOWER = re.compile(r"\W{0,4}([a-g])\W{0,4}")


def parse_letter(content: str | None) -> str | None:
    """Option letter of an answer block: the first standalone capital A-G, else a lone lowercase a-g.

    Upstream took the first capital A-G anywhere after stripping lead-ins such as "The answer is", so an answer
    starting "Based on ..." read as B; we only take a letter that is a token of its own, which makes the
    lead-in stripping unnecessary.
    """
    if not content:
        return None
    content = content[:MAX_BLOCK_CHARS]
    m = _LETTER.search(content)
    if m:
        return m.group(1)
    m = _LONE_LOWER.fullmatch(content.strip())
    return m.group(1).upper() if m else None


# VideoChat-R1 src_eval/evaluate_{gqa,qa}.py, extract_characters_regex: these lead-ins are deleted, then the first
# capital A-G anywhere is the letter. "Best answer:" "Best option:" is one string there (a missing comma), kept so.
UPSTREAM_LEAD_INS = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                     "The best option is", "The correct option is", "Best answer:Best option:")
_ANY_CAPITAL = re.compile(r"[A-G]")


def upstream_letter(content: str | None) -> str | None:
    """Option letter the way VideoChat-R1's evaluation reads it: "Based on the video, C" reads as B."""
    if content is None:
        return None
    content = content[:MAX_BLOCK_CHARS].strip()
    for lead_in in UPSTREAM_LEAD_INS:
        content = content.replace(lead_in, "")
    m = _ANY_CAPITAL.search(content)  # upstream's "> 10 words and no capital" rule gives "" either way
    return m.group(0) if m else None


def gold_letter(value: Any) -> str:
    """Letter of an annotation's answer: "C" or "(C)" -> "C"."""
    letter = str(value).strip().strip("().").strip()
    if len(letter) != 1 or letter not in "ABCDEFG":
        raise ValueError(f"answer {value!r} is not an option letter A-G")
    return letter


# ---------------------------------------------------------------- number tuples


def _tuple_list_regex(arity: int, num: str) -> re.Pattern:
    inner = r"\s*,\s*".join([num] * arity)
    item = rf"(?:\(\s*{inner}\s*\)|\[\s*{inner}\s*\])"
    return re.compile(rf"\s*\[\s*{item}(?:\s*,\s*{item})*\s*(?:,\s*)?\]\s*")  # not \s*,?\s*: quadratic


_TUPLE_LISTS: dict[tuple[int, bool], re.Pattern] = {}


def parse_tuples(content: str | None, arity: int, signed: bool = False) -> list[list[float]] | None:
    """A non-empty list of number tuples, `[(a, b), ...]` or `[[a, b, c, d], ...]`, and nothing else; else None."""
    if not content or len(content) > MAX_BLOCK_CHARS:
        return None
    key = (arity, signed)
    if key not in _TUPLE_LISTS:
        _TUPLE_LISTS[key] = _tuple_list_regex(arity, SIGNED_NUM if signed else NUM)
    if not _TUPLE_LISTS[key].fullmatch(content):
        return None
    numbers = [float(x) for x in re.findall(SIGNED_NUM if signed else NUM, content)]
    return [numbers[i : i + arity] for i in range(0, len(numbers), arity)]


def parse_intervals(content: str | None) -> list[list[float]] | None:
    """Evidence spans `[(s1, e1), ...]` in seconds; None if malformed or any span has start > end."""
    spans = parse_tuples(content, 2)
    if spans is None or any(s > e for s, e in spans):
        return None
    return spans


# ---------------------------------------------------------------- intervals


def merge_intervals(intervals: Iterable[Sequence[float]]) -> list[tuple[float, float]]:
    """Sorted union of intervals; overlapping or touching ones are merged, empty or inverted ones dropped."""
    merged: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _length(merged: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in merged)


def covered_length(intervals: Iterable[Sequence[float]]) -> float:
    """Length of the union of an interval list (0 for no interval or only points)."""
    return _length(merge_intervals(intervals))


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two merged interval lists (two-pointer sweep)."""
    i = j = 0
    inter = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            inter += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return inter


def merged_iou(pred: Iterable[Sequence[float]], gold: Iterable[Sequence[float]]) -> float:
    """IoU of the unions of two interval lists; 0 when the union is empty (upstream divided by zero: defect 4)."""
    a, b = merge_intervals(pred), merge_intervals(gold)
    inter = _overlap(a, b)
    union = _length(a) + _length(b) - inter
    return min(1.0, inter / union) if union > 0 else 0.0


def segment_iou_iop(pred: Sequence[Sequence[float]], gold: Iterable[Sequence[float]]) -> tuple[float, float]:
    """NExT-GQA's official (IoU, IoP) of predicted evidence against the BEST gold segment, each maximised alone.

    Official definition (doc-doc/NExT-GQA code/TempGQA/eval_ground.py, get_tIoU and eval_ground): for one
    predicted span and each gold segment, IoU = |inter| / |hull| and IoP = |inter| / |prediction|; a question
    scores the maximum of each over its gold segments (negative overlaps never beat the initial 0). A zero-length
    prediction (start == end) has IoU 0 and IoP 1 when the point lies in a gold segment (ends included), else 0.
    VideoChat-R1 predicts a list of spans; they are read as their union P: IoU = |P n g| / |P u g| and
    IoP = |P n g| / |P| (equal to the official values for one span). A prediction made of points only has IoP 1
    when one gold segment contains all of them, else 0; points next to spans of positive length add nothing.
    """
    segments = [(float(s), float(e)) for s, e in gold]
    spans = [(float(s), float(e)) for s, e in pred]
    merged = merge_intervals(spans)
    if not merged:
        points = [s for s, e in spans if s == e]
        inside = points and any(all(g0 <= p <= g1 for p in points) for g0, g1 in segments)
        return 0.0, float(bool(inside))
    covered = _length(merged)
    best_iou = best_iop = 0.0
    for segment in segments:
        g = merge_intervals([segment])
        inter = _overlap(merged, g)
        best_iou = max(best_iou, inter / (covered + _length(g) - inter))
        best_iop = max(best_iop, inter / covered)
    return min(1.0, best_iou), min(1.0, best_iop)


def interval_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [start, end] intervals: IoU((0,10),(5,15)) = 1/3."""
    return merged_iou([a], [b])


# ---------------------------------------------------------------- boxes


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes; intersection clipped at 0, degenerate boxes score 0."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = _area(a) + _area(b) - inter
    return min(1.0, inter / union) if union > 0 else 0.0


def mean(values: Sequence[float]) -> float:
    """Mean, 0 for no values (metrics of an empty split are reported as 0 with count 0)."""
    return sum(values) / len(values) if values else 0.0


# A task's metric terms: per metric, one numerator per sample and one denominator per sample (None: 1 each, a plain
# mean). Every aggregate() is `ratio_metrics(terms(rows), len(rows))`, so the bootstrap (stages/bootstrap.py) can
# resample the sums with numpy and still compute exactly what aggregate() computes.
Terms = dict[str, tuple[Sequence[float], Sequence[float] | None]]


def ratio_metrics(terms: Terms, count: int) -> dict[str, float]:
    """`count`, then each metric as sum(numerators) / sum(denominators); 0 when nothing was counted."""
    out: dict[str, float] = {"count": count}
    for name, (num, den) in terms.items():
        out[name] = mean(num) if den is None else (sum(num) / sum(den) if sum(den) else 0.0)
    return out


# ---------------------------------------------------------------- SFT targets and answers that ignore the video

# The think block of every SFT target (stages/sft.py): short, so the loss is on the answer.
TARGET_THINK = "<think>I look at the frames.</think> "


def target_head(think: bool) -> str:
    return TARGET_THINK if think else ""


def two_decimals(x: float) -> str:
    return f"{x:.2f}"


def prior_interval(problem: dict, rng: random.Random) -> list[float]:
    """A random interval of at least 0.5 s inside the video, on a 0.25 s grid: the synthetic benchmark's time grid,
    and each such time is one token of the tiny model."""
    duration = float(problem.get("duration") or 10.0)
    last = max(math.floor(duration * 4) / 4, 0.5)
    a, b = sorted(round(rng.uniform(0, last) * 4) / 4 for _ in range(2))
    a = min(a, last - 0.5)
    return [a, min(max(b, a + 0.5), last)]


def option_letters(problem: dict) -> list[str]:
    return [o.strip()[1] for o in problem["options"]]


def most_common_letter(rows: list[dict]) -> str:
    """The most frequent gold answer letter of the rows ("A" when there are none): the blind letter."""
    counts = Counter(r["solution"]["answer"] for r in rows)
    return counts.most_common(1)[0][0] if counts else "A"
