"""Multiple-choice video QA (`qa`, NExT-QA / MVBench style): the letter of the right option.

problem  {"question": str, "options": ["(A) ...", ...]}
solution {"answer": "B"}  ("(B)" is accepted too)
"""
from __future__ import annotations

from typing import Any

from .common import (
    Terms,
    check_protocol,
    extract_block,
    format_tags,
    gold_letter,
    layout,
    parse_letter,
    ratio_metrics,
    upstream_letter,
)

NAME = "qa"
PARTS = ("format", "accuracy")


def options_text(options: list[str]) -> str:
    return "\n".join(str(o) for o in options)


def prompt_fields(problem: dict) -> dict[str, Any]:
    return {**problem, "question": problem["question"], "options": options_text(problem["options"])}


def parse(text: str, protocol: str = "ours") -> str | None:
    """Option letter from the first <answer> block: common.parse_letter, or under the `upstream` protocol
    common.upstream_letter (VideoChat-R1 src_eval/evaluate_qa.py, extract_characters_regex)."""
    read = upstream_letter if check_protocol(protocol) == "upstream" else parse_letter
    return read(extract_block(text, "answer", last=False))


def score(text: str, solution: dict, think: bool = True) -> dict[str, float]:
    """Upstream's plain-QA format reward demanded a <glue> block its prompt never asked for (reference section 8,
    defect 3); ours asks for the layout the prompt asks for."""
    gold = gold_letter(solution["answer"])
    return {
        "format": float(layout(text, format_tags(think)) is not None),
        "accuracy": float(parse(text) == gold),
    }


def sample_metrics(text: str, solution: dict, protocol: str = "ours") -> dict[str, Any]:
    pred = parse(text, protocol)
    return {"correct": float(pred == gold_letter(solution["answer"])), "parsed": pred is not None}


def terms(rows: list[dict]) -> Terms:
    return {"accuracy": ([float(r["correct"]) for r in rows], None),
            "parse_rate": ([float(r["parsed"]) for r in rows], None)}


def aggregate(rows: list[dict]) -> dict[str, float]:
    return ratio_metrics(terms(rows), len(rows))
