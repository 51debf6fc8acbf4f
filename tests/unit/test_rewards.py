"""Rule-based rewards (reference section 4), upstream defects fixed (section 8), TRL reward functions."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import tasks as T
from stages.params import TASK_NAMES
from stages.tasks.common import (
    MAX_BLOCK_CHARS,
    MAX_TEXT_CHARS,
    box_iou,
    interval_iou,
    merge_intervals,
    merged_iou,
    tail,
)

BOXES = [[0.1, 0.1, 0.5, 0.5]] * 8
SOLUTIONS = {
    "tg": {"timestamps": [0.0, 10.0]},
    "gqa": {"answer": "(C)", "glue": [[1.0, 5.0]]},
    "tracking": {"boxes": BOXES},
    "qa": {"answer": "B"},
    "stvg": {"timestamps": [2.0, 6.0], "frame_times": [0.0, 2.0, 4.0, 6.0],
             "boxes": [None, [0.1, 0.1, 0.5, 0.5], [0.2, 0.1, 0.6, 0.5], None]},
}


def think(*blocks: str) -> str:
    return "<think>reasoning</think>\n" + "".join(blocks)


# ---------------------------------------------------------------- geometry, worked values


@pytest.mark.parametrize(
    "a, b, iou",
    [
        ((0, 10), (5, 15), 1 / 3),
        ((0, 1), (2, 3), 0.0),  # disjoint
        ((0, 1), (1, 2), 0.0),  # touching
        ((2, 4), (2, 4), 1.0),
        ((0, 10), (2, 4), 0.2),
        ((3, 3), (3, 3), 0.0),  # empty union: 0, not ZeroDivisionError (upstream defect 4)
        ((5, 1), (0, 10), 0.0),  # inverted interval covers nothing
    ],
)
def test_interval_iou(a, b, iou):
    assert interval_iou(a, b) == pytest.approx(iou)


def test_merged_iou_worked_value_and_merging():
    assert merged_iou([(0, 3), (2, 4)], [(1, 5)]) == pytest.approx(3 / 5)
    assert merge_intervals([(4, 6), (0, 2), (2, 3), (1, 1.5)]) == [(0, 3), (4, 6)]  # touching spans merge
    assert merged_iou([(0, 2), (4, 6)], [(1, 5)]) == pytest.approx(2 / 6)
    assert merged_iou([], []) == 0.0
    assert merged_iou([(1, 1)], [(1, 1)]) == 0.0


@pytest.mark.parametrize(
    "a, b, iou",
    [
        ((0, 0, 1, 1), (0, 0, 1, 1), 1.0),
        ((0, 0, 1, 1), (0, 0, 0.5, 1), 0.5),
        ((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1), 0.0),
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),
        ((0.5, 0.5, 0.2, 0.2), (0, 0, 1, 1), 0.0),  # inverted box
        ((0.3, 0.3, 0.3, 0.3), (0.3, 0.3, 0.3, 0.3), 0.0),  # empty union
    ],
)
def test_box_iou(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)


coord = st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False)
interval = st.tuples(coord, coord).map(sorted)


@settings(max_examples=300)
@given(interval, interval)
def test_interval_iou_properties(a, b):
    iou = interval_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == interval_iou(b, a)
    if a[1] > a[0]:
        assert interval_iou(a, a) == 1.0
    if a[1] <= b[0] or b[1] <= a[0]:
        assert iou == 0.0


@settings(max_examples=200)
@given(st.lists(interval, max_size=6), st.lists(interval, max_size=6))
def test_merged_iou_properties(a, b):
    iou = merged_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == pytest.approx(merged_iou(b, a))
    if any(e > s for s, e in a):
        assert merged_iou(a, a) == pytest.approx(1.0)


box = st.tuples(interval, interval).map(lambda xy: (xy[0][0], xy[1][0], xy[0][1], xy[1][1]))


@settings(max_examples=300)
@given(box, box)
def test_box_iou_properties(a, b):
    iou = box_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == box_iou(b, a)
    if (a[2] - a[0]) * (a[3] - a[1]) > 0:  # positive area (tiny sides can underflow to 0)
        assert box_iou(a, a) == 1.0
    if a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]:
        assert iou == 0.0


# ---------------------------------------------------------------- per-task rewards


@pytest.mark.parametrize(
    "text, expected",
    [
        (think("<answer>5 to 15</answer>"), {"format": 1.0, "iou": pytest.approx(1 / 3)}),
        ("  <think></think><answer>0.00 to 10.00</answer>\n", {"format": 1.0, "iou": 1.0}),
        (think("<answer>20 to 30</answer>"), {"format": 1.0, "iou": 0.0}),
        (think("<answer>15 to 5</answer>"), {"format": 1.0, "iou": 0.0}),  # start > end -> 0, not swapped
        (think("<answer>3 to 3</answer>"), {"format": 1.0, "iou": 0.0}),
        (think("<answer>soon</answer>"), {"format": 1.0, "iou": 0.0}),
        ("<answer>0 to 10</answer>", {"format": 0.0, "iou": 1.0}),  # no think block
        (think("<answer>0 to 10</answer> trailing"), {"format": 0.0, "iou": 1.0}),
        ("<think>a</think> x <answer>0 to 10</answer>", {"format": 0.0, "iou": 1.0}),  # text between blocks
        (think("<answer>0 to 1</answer><answer>0 to 10</answer>"), {"format": 0.0, "iou": 1.0}),  # tag twice
        ("<answer>0 to 10</answer><think>a</think>", {"format": 0.0, "iou": 1.0}),  # wrong order
        ("<think>put it in <answer></think><answer>0 to 10</answer>", {"format": 0.0, "iou": 1.0}),  # tag in think
    ],
)
def test_tg_score(text, expected):
    assert T.score("tg", text, SOLUTIONS["tg"]) == expected


def test_tg_empty_gold_union_is_zero_not_a_crash():
    assert T.score("tg", think("<answer>4 to 4</answer>"), {"timestamps": [4, 4]})["iou"] == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        (think("<answer>C</answer><glue>[(1, 5)]</glue>"), (1.0, 1.0, 1.0)),
        (think("<answer>(C)</answer>\n<glue>[(0, 3), (2, 4)]</glue>"), (1.0, 1.0, 0.6)),
        (think("<answer>The answer is C</answer><glue>[(6, 9)]</glue>"), (1.0, 1.0, 0.0)),
        (think("<answer>A</answer><glue>[(1, 5)]</glue>"), (1.0, 0.0, 1.0)),
        (think("<answer>C</answer>"), (0.0, 1.0, 0.0)),  # glue missing
        (think("<answer>C</answer><glue>1 to 5</glue>"), (0.0, 1.0, 0.0)),  # glue not an interval list
        (think("<answer>C</answer><glue>[]</glue>"), (0.0, 1.0, 0.0)),  # empty list is not evidence
        (think("<answer>C</answer><glue>[(5, 1)]</glue>"), (0.0, 1.0, 0.0)),  # start > end
        (think("<glue>[(1, 5)]</glue><answer>C</answer>"), (0.0, 1.0, 1.0)),  # wrong order
    ],
)
def test_gqa_score(text, expected):
    parts = T.score("gqa", text, SOLUTIONS["gqa"])
    assert list(parts) == ["format", "accuracy", "evidence_iou"]
    assert tuple(parts.values()) == pytest.approx(expected)


def tracking_answer(boxes) -> str:
    return think(f"<answer>{json.dumps(boxes)}</answer>")


@pytest.mark.parametrize(
    "boxes, fmt, iou",
    [
        (BOXES, 1.0, 1.0),
        ([[0.1, 0.1, 0.5, 0.3]] * 8, 1.0, 0.5),
        ([[0, 0, 1, 1]] * 8, 1.0, 0.16),
        (BOXES[:7], 0.0, 0.0),  # upstream sampled 7 frames but demanded 8 boxes: we demand one per frame
        (BOXES + BOXES[:1], 0.0, 0.0),
        ([[0.1, 0.1, 0.5, 1.2]] + BOXES[1:], 0.0, (0.16 / 0.44 + 7) / 8),  # out of [0,1]
        ([[0.5, 0.1, 0.1, 0.5]] + BOXES[1:], 0.0, 7 / 8),  # x0 > x1
        ([[0.1, 0.5, 0.5, 0.5]] + BOXES[1:], 0.0, 7 / 8),  # y0 == y1
        ([[0.1, 0.1, 0.5]] * 8, 0.0, 0.0),  # 3 numbers
    ],
)
def test_tracking_score(boxes, fmt, iou):
    assert T.score("tracking", tracking_answer(boxes), SOLUTIONS["tracking"]) == {
        "format": fmt,
        "iou": pytest.approx(iou),
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        (think("<answer>B</answer>"), {"format": 1.0, "accuracy": 1.0}),  # no <glue> needed (upstream defect 3)
        (think("<answer>(B) the book</answer>"), {"format": 1.0, "accuracy": 1.0}),
        (think("<answer>A</answer>"), {"format": 1.0, "accuracy": 0.0}),
        (think("<answer>B</answer><glue>[(1, 2)]</glue>"), {"format": 0.0, "accuracy": 1.0}),  # not asked for
        ("B", {"format": 0.0, "accuracy": 0.0}),
    ],
)
def test_qa_score(text, expected):
    assert T.score("qa", text, SOLUTIONS["qa"]) == expected


@pytest.mark.parametrize(
    "task, answer",
    [
        ("tg", "<answer>0 to 10</answer>"),
        ("gqa", "<answer>C</answer> <glue>[(1, 5)]</glue>"),
        ("tracking", f"<answer>{BOXES}</answer>"),
        ("qa", "<answer>B</answer>"),
    ],
)
def test_nothink_format(task, answer):
    assert T.score(task, answer, SOLUTIONS[task], think=False)["format"] == 1.0
    assert T.score(task, think(answer), SOLUTIONS[task], think=False)["format"] == 0.0
    assert T.score(task, think(answer), SOLUTIONS[task], think=True)["format"] == 1.0
    assert T.score(task, answer, SOLUTIONS[task], think=True)["format"] == 0.0
    assert sum(T.score(task, think(answer), SOLUTIONS[task]).values()) == len(T.get_task(task).PARTS)


@pytest.mark.parametrize(
    "task, text",
    [
        ("tg", think("<answer>2.5 to 7.5</answer>")),
        ("tg", think("<answer>7.5 to 2.5</answer>")),
        ("gqa", think("<answer>C</answer><glue>[(0, 3), (2, 4)]</glue>")),
        ("tracking", tracking_answer([[0.1, 0.1, 0.5, 0.3]] * 8)),
        ("qa", think("<answer>The answer is (B)</answer>")),
    ],
)
def test_one_parser_for_training_and_evaluation(task, text):
    """Upstream's eval scripts parsed differently from its rewards; here both go through parse()."""
    parts, metrics = T.score(task, text, SOLUTIONS[task]), T.sample_metrics(task, text, SOLUTIONS[task])
    train_value = parts.get("iou", parts.get("accuracy"))
    eval_value = metrics.get("iou", metrics.get("miou", metrics.get("correct")))
    assert train_value == eval_value
    if task == "gqa":
        assert parts["evidence_iou"] == metrics["evidence_iou"]


def test_solution_may_be_json_string():
    text = think("<answer>C</answer><glue>[(1, 5)]</glue>")
    assert T.score("gqa", text, json.dumps(SOLUTIONS["gqa"])) == T.score("gqa", text, SOLUTIONS["gqa"])


# ---------------------------------------------------------------- TRL reward functions


def test_reward_function_names_and_parts():
    funcs = T.reward_functions(list(TASK_NAMES))
    assert [f.__name__ for f in funcs] == [
        "tg_format",
        "tg_iou",
        "gqa_format",
        "gqa_accuracy",
        "gqa_evidence_iou",
        "tracking_format",
        "tracking_iou",
        "qa_format",
        "qa_accuracy",
        "stvg_format",
        "stvg_tiou",
        "stvg_viou",
    ]
    assert T.reward_names(list(TASK_NAMES)) == [f.__name__ for f in funcs]
    with pytest.raises(ValueError, match="duplicate"):
        T.reward_functions(["tg", "tg"])
    with pytest.raises(KeyError):
        T.reward_functions(["nope"])


def trl_batch():
    """A mixed-task batch the way TRL passes it: every column as a list, one entry per completion."""
    rows = [
        ("tg", think("<answer>5 to 15</answer>"), SOLUTIONS["tg"]),
        ("qa", think("<answer>B</answer>"), SOLUTIONS["qa"]),
        ("tg", "<answer>0 to 10</answer>", json.dumps(SOLUTIONS["tg"])),
        ("gqa", think("<answer>C</answer><glue>[(0, 3), (2, 4)]</glue>"), SOLUTIONS["gqa"]),
        ("tracking", tracking_answer(BOXES), SOLUTIONS["tracking"]),
        ("qa", [{"role": "assistant", "content": think("<answer>A</answer>")}], json.dumps(SOLUTIONS["qa"])),
    ]
    return {
        "prompts": [[{"role": "user", "content": "..."}]] * len(rows),
        "completions": [c for _, c, _ in rows],
        "completion_ids": [[1, 2, 3]] * len(rows),
        "task": [t for t, _, _ in rows],
        "solution": [s for _, _, s in rows],
        "video": ["v.mp4"] * len(rows),  # other dataset columns arrive too
        "trainer_state": None,
    }


def test_reward_functions_align_with_completions_and_skip_other_tasks():
    out = {f.__name__: f(**trl_batch()) for f in T.reward_functions(list(TASK_NAMES))}
    third = pytest.approx(1 / 3)
    assert out["tg_format"] == [1.0, None, 0.0, None, None, None]
    assert out["tg_iou"] == [third, None, 1.0, None, None, None]
    assert out["qa_format"] == [None, 1.0, None, None, None, 1.0]
    assert out["qa_accuracy"] == [None, 1.0, None, None, None, 0.0]
    assert out["gqa_format"] == [None, None, None, 1.0, None, None]
    assert out["gqa_accuracy"] == [None, None, None, 1.0, None, None]
    assert out["gqa_evidence_iou"] == [None, None, None, pytest.approx(0.6), None, None]
    assert out["tracking_format"] == [None, None, None, None, 1.0, None]
    assert out["tracking_iou"] == [None, None, None, None, 1.0, None]


def test_reward_function_for_a_subset_of_tasks_and_nothink():
    (fmt, iou) = T.reward_functions(["tg"], think=False)
    batch = trl_batch()
    assert fmt(**batch) == [0.0, None, 1.0, None, None, None]
    assert iou(**batch)[2] == 1.0


def test_reward_function_content_blocks_and_positional_call():
    completion = [{"role": "assistant", "content": [{"type": "text", "text": think("<answer>B</answer>")}]}]
    (_, acc) = T.reward_functions(["qa"])
    assert acc(["p"], [completion], None, ["qa"], [SOLUTIONS["qa"]]) == [1.0]


def test_reward_function_needs_task_and_solution_columns():
    (fmt, _) = T.reward_functions(["qa"])
    with pytest.raises(ValueError, match="'task'"):
        fmt(prompts=["p"], completions=["x"], solution=[SOLUTIONS["qa"]])
    with pytest.raises(ValueError):  # misaligned columns are a bug, not a silent truncation
        fmt(prompts=["p", "p"], completions=["x", "y"], task=["qa"], solution=[SOLUTIONS["qa"]])


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("task", TASK_NAMES)
@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_score_is_total_and_bounded(task, text):
    parts = T.score(task, text, SOLUTIONS[task])
    assert list(parts) == list(T.get_task(task).PARTS)
    assert all(0.0 <= v <= 1.0 for v in parts.values())


MB = 1 << 20
PAIRS_4K = "<think>x</think><answer>" + "1.5 to 2.5 and " * 270 + "</answer>"  # just under the block limit
ADVERSARIAL = {
    "opening tags": "<answer>" * (MB // 8),
    "closing tags": "</answer>" * (MB // 9),
    "nested tags": "<think><answer><glue>" * (MB // 42) + "</glue></answer></think>" * (MB // 48),
    "unclosed tags": "<think>" + "<answer>0 to 10 " * (MB // 16),
    "one huge answer of digits": "<answer>" + "9" * MB + "</answer>",
    "digit runs in a block": "<think></think><answer>" + ("1" * 1000 + " to ") * 4 + "2</answer>",
    "digits and dots": "<think></think><answer>" + "1." * (MB // 2) + "</answer>",
    "many to pairs": "<think>x</think><answer>" + "1 to 2 and " * (MB // 11) + "</answer>",
    "many to pairs in a block": PAIRS_4K,
    "almost pairs": "<answer>" + "1 to -" * (MB // 6) + "</answer>",
    "almost box list": "<think>x</think><answer>[" + "[0.1, 0.2, 0.3, 0.4], " * (MB // 22) + "[0.1]]</answer>",
    "almost glue": "<think>x</think><answer>C</answer><glue>[" + "(1.5, 2.5), " * (MB // 12) + "(1, 2]</glue>",
    "brackets": "<answer>" + "[(" * (MB // 2) + "</answer>",
    "whitespace": "<think>" + " \n\t" * (MB // 3) + "</think><answer>" + " " * MB + "</answer>",
    "valid tail": "x" * MB + "<think>a</think><answer>C</answer><glue>[(1, 5)]</glue>",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_completions_are_scored_totally_from_a_bounded_tail(name):
    """No exception, values in range, and the answer depends only on the last MAX_TEXT_CHARS characters (the
    work per completion is bounded by that; bench/bench_rewards.py measures the time)."""
    text = ADVERSARIAL[name]
    for task in TASK_NAMES:
        parts = T.score(task, text, SOLUTIONS[task])
        assert all(0.0 <= v <= 1.0 for v in parts.values())
        for protocol in T.PROTOCOLS:  # the upstream readings are bounded the same way (docs/tasks.md)
            assert T.parse(task, text, protocol) == T.parse(task, tail(text), protocol)
            metrics = T.sample_metrics(task, text, SOLUTIONS[task], protocol)
            assert metrics == T.sample_metrics(task, tail(text), SOLUTIONS[task], protocol)
            assert all(0.0 <= v <= 1.0 for v in metrics.values() if isinstance(v, float))
        if len(text) > MAX_TEXT_CHARS:
            assert parts["format"] == 0.0
    n = len(TASK_NAMES)
    batch = {"prompts": ["p"] * n, "completions": [text] * n, "task": list(TASK_NAMES),
             "solution": [SOLUTIONS[t] for t in TASK_NAMES]}
    for fn in T.reward_functions(list(TASK_NAMES)):
        assert sum(v is not None for v in fn(**batch)) == 1


def test_adversarial_answers_read_as_expected():
    assert T.parse("tg", ADVERSARIAL["many to pairs in a block"]) == [1.5, 2.5]  # the last pair of a long list
    assert T.parse("tg", ADVERSARIAL["digit runs in a block"]) is None  # 1000-digit numbers are no numbers
    assert T.parse("tg", ADVERSARIAL["many to pairs"]) is None  # a block longer than MAX_BLOCK_CHARS is missing
    assert T.parse("gqa", ADVERSARIAL["valid tail"]) == {"answer": "C", "glue": [[1.0, 5.0]]}
    assert T.score("tg", PAIRS_4K, SOLUTIONS["tg"]) == {"format": 1.0, "iou": 0.1}
    assert T.parse("tg", "<answer>" + "1 to 2 " * (MAX_BLOCK_CHARS // 7 + 1) + "</answer>") is None


def test_only_the_tail_is_examined_and_overlong_completions_lose_format():
    valid = think("<answer>C</answer><glue>[(1, 5)]</glue>")
    long = "<think>" + "x" * MAX_TEXT_CHARS + "</think><answer>C</answer><glue>[(1, 5)]</glue>"
    assert T.score("gqa", valid, SOLUTIONS["gqa"])["format"] == 1.0
    assert T.score("gqa", long, SOLUTIONS["gqa"]) == {"format": 0.0, "accuracy": 1.0, "evidence_iou": 1.0}
