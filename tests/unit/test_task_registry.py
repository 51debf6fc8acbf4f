"""The task registry is the one task list: every module keeps the contract, and the rest reads the registry
(params' task names, the synthesize stage's hooks, build_samples' bind_frames hook, the one scoring function)."""
from __future__ import annotations

import json
import random
import types

import pytest

from stages import build_samples, params
from stages import synthesize as synthesize_stage
from stages import tasks as T
from stages.params import SynthesizeParams

CONSTANTS = {"NAME": str, "PARTS": tuple, "HEADLINE": str, "INPUT": str, "PROBLEM_FIELDS": tuple}


def test_params_task_names_are_the_registrys():
    assert params.TASK_NAMES == tuple(T.TASKS)


@pytest.mark.parametrize("name", list(T.TASKS))
def test_every_registered_module_keeps_the_contract(name):
    module = T.TASKS[name]
    missing = [a for a in T.CONTRACT if not hasattr(module, a)]
    assert not missing, f"{module.__name__} lacks {missing} (docs/tasks.md, 'Add a task')"
    for attr, kind in CONSTANTS.items():
        assert isinstance(getattr(module, attr), kind), attr
    assert module.NAME == name and module.PARTS and module.INPUT in T.INPUTS
    assert module.PLOT_IOU_FIELD is None or isinstance(module.PLOT_IOU_FIELD, str)
    assert all(isinstance(f, str) for f in module.PROBLEM_FIELDS)
    assert module.HEADLINE in T.aggregate(name, [])  # a metric the task reports
    for attr in [a for a in T.CONTRACT if not a.isupper()] + [h for h in T.HOOKS if hasattr(module, h)]:
        assert callable(getattr(module, attr)), attr
    for think in ("", "_nothink"):
        assert (T.PROMPT_DIR / f"{name}{think}.txt").is_file()


def test_headline_and_plot_fields_come_from_the_modules():
    assert T.headline() == {"tg": "mIoU", "gqa": "evidence_mIoU", "tracking": "AO", "qa": "accuracy",
                            "stvg": "m_vIoU"}
    assert T.plot_iou_fields() == {"tg": "iou", "gqa": "evidence_iou", "tracking": "miou", "stvg": "viou"}


SAMPLE_ROWS = [
    {"id": "t", "task": "tg", "problem": {"sentence": "s", "duration": 8.0}, "solution": {"timestamps": [1.0, 4.0]}},
    {"id": "g", "task": "gqa", "problem": {"question": "q", "options": ["(A) x", "(B) y"], "duration": 8.0},
     "solution": {"answer": "B", "glue": [[2.0, 6.0]]}},
    {"id": "k", "task": "tracking", "problem": {"object": "o", "init_box": [0.1, 0.1, 0.3, 0.3]},
     "solution": {"boxes": [[0.1, 0.1, 0.3, 0.3]] * 8}},
    {"id": "q", "task": "qa", "problem": {"question": "q", "options": ["(A) x", "(B) y"]}, "solution": {"answer": "A"}},
    {"id": "v", "task": "stvg", "problem": {"sentence": "s", "duration": 8.0, "frame_times": [0.0, 2.0, 4.0, 6.0]},
     "solution": {"timestamps": [2.0, 6.0], "frame_times": [0.0, 2.0, 4.0, 6.0],
                  "boxes": [None, [0.1, 0.1, 0.5, 0.5], [0.2, 0.1, 0.6, 0.5], None]}},
]


@pytest.mark.parametrize("row", SAMPLE_ROWS, ids=lambda r: r["task"])
def test_targets_prior_and_blind_answers_are_well_formed(row):
    module = T.get_task(row["task"])
    for think in (True, False):
        assert T.score(row["task"], module.target_text(row["solution"], think), row["solution"], think)["format"] == 1
    prior = module.prior_solution(row, random.Random(0))
    assert T.score(row["task"], module.target_text(prior), row["solution"])["format"] == 1
    fit = module.blind_fit([row], True)
    assert json.loads(json.dumps(fit)) == fit  # JSON-able
    blind = module.blind_solution(fit, row)
    assert T.score(row["task"], module.target_text(blind), row["solution"])["format"] == 1


def test_score_outputs_scores_every_task_and_can_keep_unscorable_rows():
    texts = [T.target_text(r["task"], r["solution"]) for r in SAMPLE_ROWS]
    metrics, records = T.score_outputs(SAMPLE_ROWS, texts)
    assert list(metrics) == sorted(T.TASKS) and all(m["count"] == 1 for m in metrics.values())
    assert metrics["tg"]["mIoU"] == 1.0 and metrics["tracking"]["AO"] == 1.0 and metrics["qa"]["accuracy"] == 1.0
    assert metrics["stvg"]["m_vIoU"] == 1.0 and metrics["stvg"]["m_tIoU"] == 1.0
    assert [r["id"] for r in records] == ["t", "g", "k", "q", "v"] and records[0]["output"] == texts[0]
    bad = [{**SAMPLE_ROWS[3], "id": "h", "solution": {"answer": 7}}]
    with pytest.raises((KeyError, TypeError, ValueError)):
        T.score_outputs(bad, [""])
    metrics, records = T.score_outputs(bad, [""], keep_unscorable=True)
    assert metrics == {} and set(records[0]) == {"id", "task", "error"}
    with pytest.raises(KeyError, match="unknown task"):
        T.score_outputs([{**SAMPLE_ROWS[0], "task": "nope"}], [""], keep_unscorable=True)


def test_build_samples_calls_bind_frames_of_tasks_that_have_it():
    row = SAMPLE_ROWS[2]
    assert build_samples.frames_refusal("tracking", dict(row), {"num_frames": 8}) is None
    assert build_samples.frames_refusal("tracking", dict(row), {"num_frames": 7}) == "7 frames but 8 boxes"
    assert not hasattr(T.get_task("tg"), "bind_frames")
    assert build_samples.frames_refusal("tg", dict(SAMPLE_ROWS[0]), {"num_frames": 3}) is None


def test_synthesize_stage_calls_every_registered_hook(tmp_path, monkeypatch):
    calls = []

    def hook(p, root):
        calls.append((p.tasks.get("fake"), root))
        return {"fake_videos": 2}

    fake = types.SimpleNamespace(NAME="fake", synthesize=hook)
    monkeypatch.setitem(T.TASKS, "fake", fake)
    monkeypatch.setattr(synthesize_stage.synthetic, "synthesize", lambda p: {"videos": 0})
    p = SynthesizeParams(out_dir=str(tmp_path), tasks={"fake": {"videos": 2}})
    assert synthesize_stage.synthesize(p) == {"videos": 0, "stvg": {"stvg_videos": 0, "stvg_queries": 0},
                                              "fake": {"fake_videos": 2}}
    assert calls == [({"videos": 2}, tmp_path)]
    assert SynthesizeParams().tasks == {}
    # of the built-in tasks only stvg makes its own data (none unless asked: its num_videos defaults to 0)
    assert [n for n, m in T.TASKS.items() if hasattr(m, "synthesize")] == ["stvg", "fake"]
