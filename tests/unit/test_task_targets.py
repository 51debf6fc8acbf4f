"""SFT targets (each task module's target_text, prior_solution): the gold ones are what the task parsers read
back with full reward; format-only targets keep the layout but not the answer. Moved from tests/model/test_sft.py."""
import random

import pytest

from stages import tasks
from stages.tasks import prior_solution, target_text

SOLUTIONS = {
    "tg": {"timestamps": [1.25, 3.5]},
    "gqa": {"answer": "C", "glue": [[1.0, 2.0], [3.5, 4.0]]},
    "tracking": {"boxes": [[0.1, 0.2, 0.3, 0.4]] * 8},
    "qa": {"answer": "B"},
}
PROBLEMS = {
    "tg": {"sentence": "x", "duration": 9.0},
    "gqa": {"question": "q", "options": ["(A) a", "(B) b", "(C) c"], "duration": 9.0},
    "tracking": {"object": "o", "init_box": [0.5, 0.5, 0.6, 0.6]},
    "qa": {"question": "q", "options": ["(A) a", "(B) b"]},
}


@pytest.mark.parametrize("task", sorted(SOLUTIONS))
@pytest.mark.parametrize("think", [True, False])
def test_gold_targets_score_full_reward(task, think):
    text = target_text(task, SOLUTIONS[task], think)
    rewards = tasks.score(task, text, SOLUTIONS[task], think=think)
    assert all(v == 1.0 for v in rewards.values()), rewards


@pytest.mark.parametrize("task", sorted(SOLUTIONS))
def test_format_targets_are_well_formed_and_ignore_the_gold(task):
    row = {"task": task, "problem": PROBLEMS[task], "solution": SOLUTIONS[task]}
    sol = prior_solution(task, row, random.Random(1))
    assert tasks.score(task, target_text(task, sol), SOLUTIONS[task])["format"] == 1.0
    if task == "tracking":  # a static tracker: the first box repeated
        assert sol["boxes"] == [PROBLEMS[task]["init_box"]] * 8
