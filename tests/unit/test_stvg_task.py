"""The stvg task module (stages/tasks/stvg/): parser, rewards, metrics, prompts, targets and blind answers.

Expected values are worked out by hand in the comments, not with the code under test. The module is imported
directly until the task registry lists it.
"""
from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from stages.tasks import stvg

PROMPTS = Path(stvg.__file__).parents[1] / "prompts"
G = [0.0, 0.0, 0.5, 0.5]  # the gold box of every frame of the worked example
# Six sampled frames at 0..5 s; the gold interval [1, 4) holds frames 1, 2, 3.
SOLUTION = {"timestamps": [1.0, 4.0], "frame_times": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            "boxes": [None, G, G, G, None, None]}
PROBLEM = {"sentence": "the red circle moves left", "duration": 6.0, "frame_times": SOLUTION["frame_times"]}
ROW = {"id": "v#0", "task": "stvg", "problem": PROBLEM, "solution": SOLUTION}


def answer(interval: str, boxes: str, think: bool = True) -> str:
    head = "<think>look</think> " if think else ""
    return f"{head}<answer>{interval}</answer> <boxes>{boxes}</boxes>"


def test_contract_attributes():
    assert stvg.NAME == "stvg" and stvg.PARTS == ("format", "tiou", "viou") and stvg.HEADLINE == "m_vIoU"
    assert stvg.INPUT == "video" and stvg.PLOT_IOU_FIELD == "viou"
    assert stvg.PROBLEM_FIELDS == ("sentence", "duration", "frame_times")
    for name in ("prompt_fields", "parse", "score", "sample_metrics", "aggregate", "load_annotations",
                 "target_text", "prior_solution", "blind_fit", "blind_solution", "bind_frames", "synthesize"):
        assert callable(getattr(stvg, name)), name


# ---------------------------------------------------------------- parse


def test_parse_reads_interval_and_boxes():
    text = answer("2.25 to 4.50", "[[0.10, 0.20, 0.30, 0.40], [0.15, 0.20, 0.35, 0.40]]")
    assert stvg.parse(text) == {"interval": [2.25, 4.5],
                                "boxes": [[0.1, 0.2, 0.3, 0.4], [0.15, 0.2, 0.35, 0.4]]}
    assert stvg.parse(answer("1 to 2", "[]")) == {"interval": [1.0, 2.0], "boxes": []}


@pytest.mark.parametrize("text, expected", [
    (answer("4.50 to 2.25", "[]"), {"interval": None, "boxes": []}),   # start > end
    (answer("from 1 to 2", "[[0, 0, 1]]"), None),                     # neither block reads
    (answer("1 to 2", "not boxes"), {"interval": [1.0, 2.0], "boxes": None}),
    ("1 to 2 [[0, 0, 1, 1]]", None),                                  # no tags
    ("", None),
])
def test_parse_partial_and_unreadable(text, expected):
    assert stvg.parse(text) == expected


def test_protocols():
    text = answer("1 to 2", "[]")
    assert stvg.parse(text, "upstream") == stvg.parse(text, "ours")  # no upstream STVG protocol: read as ours
    with pytest.raises(ValueError, match="unknown scoring protocol"):
        stvg.parse(text, "official")


def test_parse_is_bounded_on_huge_text():
    t0 = time.perf_counter()
    assert stvg.parse("<answer>" + "1 " * 500_000 + "<boxes>[[" * 100_000) is None
    assert time.perf_counter() - t0 < 5  # generous: the point is that it returns, not how fast


# ---------------------------------------------------------------- rewards and the worked example


def test_worked_example_rewards():
    # Predicted [2, 5.5): frames 2, 3, 4, 5 (P); three boxes, so frame 5 has none.
    # frame 2: [0,0,.5,.5] vs G -> IoU 1; frame 3: [0,0,.25,.5] (area .125) inside G (area .25) -> .125/.25 = .5;
    # frame 4 is not in G. P and G = {2, 3}, P or G = {1, 2, 3, 4, 5}: vIoU = (1 + .5) / 5 = .3.
    # tIoU of [2, 5.5] and [1, 4]: intersection [2, 4] = 2, union [1, 5.5] = 4.5 -> 4/9.
    text = answer("2.00 to 5.50", "[[0, 0, 0.5, 0.5], [0, 0, 0.25, 0.5], [0.5, 0.5, 1, 1]]")
    reward = stvg.score(text, SOLUTION, think=True)
    assert reward["viou"] == pytest.approx(0.3)
    assert reward["tiou"] == pytest.approx(4 / 9)
    assert reward["format"] == 0.0  # 3 boxes for the 4 listed frames inside the predicted interval
    assert stvg.sample_metrics(text, SOLUTION) == {"tiou": pytest.approx(4 / 9), "viou": pytest.approx(0.3),
                                                   "parsed": True}


def test_format_needs_one_valid_box_per_frame_inside_and_the_layout():
    four = "[[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]"
    assert stvg.score(answer("2.00 to 5.50", four), SOLUTION)["format"] == 1.0
    assert stvg.score(answer("2.00 to 5.50", four, think=False), SOLUTION, think=False)["format"] == 1.0
    assert stvg.score(answer("2.00 to 5.50", four, think=False), SOLUTION, think=True)["format"] == 0.0
    bad = four.replace("[0, 0, 0.5, 0.5]]", "[0.5, 0, 0.4, 0.5]]")  # x0 > x1
    assert stvg.score(answer("2.00 to 5.50", bad), SOLUTION)["format"] == 0.0
    # no listed frame in [5.6, 5.8): the empty list is the well-formed answer; vIoU 0 / |G| = 0
    assert stvg.score(answer("5.60 to 5.80", "[]"), SOLUTION) == {"format": 1.0, "tiou": 0.0, "viou": 0.0}


def test_unreadable_interval_scores_zero():
    assert stvg.score(answer("soon", "[[0, 0, 0.5, 0.5]]"), SOLUTION) == {"format": 0.0, "tiou": 0.0,
                                                                          "viou": 0.0}
    assert stvg.sample_metrics("nothing", SOLUTION) == {"tiou": 0.0, "viou": 0.0, "parsed": False}


def test_perfect_answer_and_unbound_solution():
    # [1, 4) holds frames 1, 2, 3, each with the gold box: vIoU 3/3, tIoU 1
    text = answer("1.00 to 4.00", "[[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]")
    assert stvg.score(text, SOLUTION) == {"format": 1.0, "tiou": 1.0, "viou": 1.0}
    with pytest.raises(ValueError, match="bind_frames"):
        stvg.score(text, {"timestamps": [1.0, 4.0], "track": {}})


# ---------------------------------------------------------------- metrics


def test_aggregate_by_hand():
    rows = [{"tiou": 0.2, "viou": 0.3, "parsed": True}, {"tiou": 0.8, "viou": 0.6, "parsed": True},
            {"tiou": 0.5, "viou": 0.5, "parsed": False}]
    m = stvg.aggregate(rows)
    assert m["count"] == 3
    assert m["m_tIoU"] == pytest.approx(0.5)          # (0.2 + 0.8 + 0.5) / 3
    assert m["m_vIoU"] == pytest.approx(1.4 / 3)      # (0.3 + 0.6 + 0.5) / 3
    assert m["vIoU@0.3"] == pytest.approx(2 / 3)      # strictly above 0.3: 0.6 and 0.5, not 0.3
    assert m["vIoU@0.5"] == pytest.approx(1 / 3)      # strictly above 0.5: 0.6 only
    assert m["parse_rate"] == pytest.approx(2 / 3)
    assert stvg.HEADLINE in m and set(m) == set(stvg.aggregate([]))
    assert stvg.aggregate([]) == {"count": 0, "m_tIoU": 0.0, "m_vIoU": 0.0, "vIoU@0.3": 0.0, "vIoU@0.5": 0.0,
                                  "parse_rate": 0.0}


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize("think", [True, False])
def test_prompt_renders_from_the_template_files(think):
    template = (PROMPTS / f"stvg{'' if think else '_nothink'}.txt").read_text(encoding="utf-8")
    text = template.format_map(stvg.prompt_fields(PROBLEM))
    assert 'find when this event happens and where its subject is: "the red circle moves left"' in text
    assert "(6.00 seconds long)" in text
    assert "The 6 frames you see are at these times, in seconds: 0.00, 1.00, 2.00, 3.00, 4.00, 5.00." in text
    assert "<answer>2.25 to 4.50</answer>" in text and "<boxes>" in text
    assert ("<think>" in text) is think
    assert not re.search(r"\{[a-z_]+\}", text)  # no field left unfilled


def test_prompt_fields_need_bound_frames():
    with pytest.raises(KeyError, match="frame_times"):
        stvg.prompt_fields({"sentence": "x", "duration": 3.0})


# ---------------------------------------------------------------- targets, prior, blind


@pytest.mark.parametrize("think", [True, False])
def test_target_text_parses_back_to_full_reward(think):
    text = stvg.target_text(SOLUTION, think)
    assert text.endswith("<answer>1.00 to 4.00</answer> <boxes>[[0.00, 0.00, 0.50, 0.50], "
                         "[0.00, 0.00, 0.50, 0.50], [0.00, 0.00, 0.50, 0.50]]</boxes>")
    assert stvg.score(text, SOLUTION, think) == {"format": 1.0, "tiou": 1.0, "viou": 1.0}


def test_prior_solution_is_well_formed_and_blind():
    rng = random.Random(0)
    for _ in range(20):
        sol = stvg.prior_solution(ROW, rng)
        s, e = sol["timestamps"]
        assert 0 <= s < e <= 6.0 and s * 4 == int(s * 4) and e * 4 == int(e * 4)  # the 0.25 s grid
        assert stvg.score(stvg.target_text(sol), SOLUTION)["format"] == 1.0


def test_blind_fit_and_solution():
    # every training query is [2, 6] of a 10 s video: the best fraction is (0.2, 0.6) with mean tIoU 1;
    # the mean gold box of [0.1, 0.1, 0.3, 0.3] and [0.3, 0.3, 0.5, 0.5] is [0.2, 0.2, 0.4, 0.4]
    times = [0.0, 2.5, 5.0, 7.5]
    train = [{"task": "stvg", "problem": {"duration": 10.0},
              "solution": {"timestamps": [2.0, 6.0], "frame_times": times, "boxes": [None, box, box, None]}}
             for box in ([0.1, 0.1, 0.3, 0.3], [0.3, 0.3, 0.5, 0.5])]
    fit = stvg.blind_fit(train + [{"task": "tg", "problem": {}, "solution": {}}], think=True)
    assert json.loads(json.dumps(fit)) == fit
    assert fit["fraction"] == pytest.approx([0.2, 0.6])
    assert fit["box"] == pytest.approx([0.2, 0.2, 0.4, 0.4])
    row = {"task": "stvg", "problem": {"duration": 20.0, "frame_times": [0.0, 5.0, 10.0, 15.0]}}
    sol = stvg.blind_solution(fit, row)
    assert sol["timestamps"] == [4.0, 12.0]                  # 0.2 and 0.6 of 20 s
    assert sol["boxes"] == [None, pytest.approx([0.2, 0.2, 0.4, 0.4]), pytest.approx([0.2, 0.2, 0.4, 0.4]), None]
    assert stvg.blind_fit([], think=False)["fraction"] == [0.0, 1.0]
