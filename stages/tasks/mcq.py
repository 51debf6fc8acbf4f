"""Multiple-choice video QA (`qa`, NExT-QA / MVBench style): the letter of the right option.

problem  {"question": str, "options": ["(A) ...", ...]}
solution {"answer": "B"}  ("(B)" is accepted too)
"""
from __future__ import annotations

import random
from typing import Any

from stages.datasets import annotations as ann

from .common import (
    Terms,
    check_protocol,
    extract_block,
    format_tags,
    gold_letter,
    layout,
    most_common_letter,
    option_letters,
    parse_letter,
    ratio_metrics,
    target_head,
    upstream_letter,
)

NAME = "qa"
PARTS = ("format", "accuracy")
HEADLINE = "accuracy"
PLOT_IOU_FIELD = None
INPUT = "video"
PROBLEM_FIELDS = ("question", "options")


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


# ---------------------------------------------------------------- annotations


def load_annotations(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """Multiple-choice QA JSON list {id, video, question, options, answer} -> samples with the item's id (no time
    interval, so `policy` changes nothing)."""

    def sample(item, sid):
        options, letter = ann.options_letter(ann.field(item, "options"), ann.field(item, "answer"))
        return {
            "id": sid, "task": NAME, "video_id": ann.video_id_of(ann.text(ann.field(item, "video"), "video")),
            "problem": {"question": ann.text(ann.field(item, "question"), "question"), "options": options},
            "solution": {"answer": letter},
        }

    return ann.id_items(ann.load_json(path), path, "multiple-choice QA", sample)


# ---------------------------------------------------------------- SFT targets and blind answers


def target_text(solution: dict, think: bool = True) -> str:
    return f"{target_head(think)}<answer>{solution['answer']}</answer>"


def prior_solution(row: dict, rng: random.Random) -> dict:
    return {"answer": rng.choice(option_letters(row["problem"]))}


def blind_fit(train_rows: list[dict], think: bool) -> str:
    return most_common_letter(train_rows)  # the most frequent gold letter


def blind_solution(fit: str, row: dict) -> dict:
    return {"answer": fit}
