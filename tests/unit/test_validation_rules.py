"""Greedy validation during training (stages/rl/validation.py): which rows are set aside, and which validated step
each rule keeps; the weight round trip of stages/rl/validator.py on a small module."""
import pytest
import torch

from stages.params import ValidationParams
from stages.rl.validation import mean_headline, passes_guard, selected, split_validation

HEAD = {"tg": "mIoU", "tracking": "AO"}


def rows():
    # videos v0..v5 each hold a tg query and two qa questions (one clip, several tasks); t0..t2 are tracking clips
    out = []
    for i in range(6):
        out += [{"id": f"tg{i}", "task": "tg", "video_id": f"v{i}"}]
        out += [{"id": f"qa{i}{k}", "task": "qa", "video_id": f"v{i}"} for k in range(2)]
    out += [{"id": f"tr{i}", "task": "tracking", "video_id": f"t{i}"} for i in range(3)]
    out += [{"id": "gqa0", "task": "gqa", "video_id": "only"}]  # one video only: it must keep training
    return out


TASKS = ["tg", "qa", "tracking", "gqa"]


def test_split_sets_aside_whole_videos_with_every_tasks_rows():
    train, val = split_validation(rows(), TASKS, per_task=2, seed=0)
    assert sorted(r["id"] for r in train + val) == sorted(r["id"] for r in rows())
    held = {r["video_id"] for r in val}
    assert not any(r["video_id"] in held for r in train), "a validation video must not train under any task"
    count = lambda task: sum(r["task"] == task for r in val)  # noqa: E731
    assert count("tg") == 2 and count("qa") == 4 and count("tracking") == 2  # qa comes with the tg videos
    assert [r["id"] for r in train if r["task"] == "gqa"] == ["gqa0"]  # never a task's last video
    order = [r["id"] for r in rows()]
    assert [r["id"] for r in train] == [i for i in order if i in {r["id"] for r in train}]
    assert split_validation(rows(), TASKS, 2, seed=0) == (train, val)  # seeded
    assert {r["id"] for r in split_validation(rows(), TASKS, 2, seed=1)[1]} != {r["id"] for r in val}


def test_split_with_zero_rows_changes_nothing():
    assert split_validation(rows(), TASKS, 0, 0) == (rows(), [])


def entry(step, tg, tg_parse, tr, tr_parse):
    return {"step": step, "metrics": {"tg": {"mIoU": tg, "parse_rate": tg_parse},
                                      "tracking": {"AO": tr, "parse_rate": tr_parse}}}


HISTORY = [entry(0, 0.30, 1.0, 0.15, 1.0), entry(50, 0.36, 1.0, 0.16, 0.95), entry(100, 0.40, 1.0, 0.10, 0.80),
           entry(150, 0.38, 1.0, 0.02, 0.20)]


def test_rules_pick_the_documented_step():
    assert selected(HISTORY, "last", HEAD, 0.1)["step"] == 150
    # guard: steps 100 (parse 0.80) and 150 (0.20) fell more than 0.1 below the start's 1.0 on tracking
    assert selected(HISTORY, "guard", HEAD, 0.1)["step"] == 50
    assert selected(HISTORY, "guard", HEAD, 0.25)["step"] == 100
    assert selected(HISTORY, "best", HEAD, 0.1)["step"] == 50  # means .225, .26, .25, .20
    assert mean_headline(HISTORY[1]["metrics"], HEAD) == pytest.approx(0.26)
    assert selected([], "guard", HEAD, 0.1) is None
    with pytest.raises(ValueError, match="one of"):
        selected(HISTORY, "first", HEAD, 0.1)


def test_best_prefers_the_later_step_on_a_tie_and_guard_always_keeps_the_start():
    tie = [entry(0, 0.3, 1.0, 0.1, 1.0), entry(10, 0.3, 1.0, 0.1, 1.0)]
    assert selected(tie, "best", HEAD, 0.1)["step"] == 10
    broken = [HISTORY[0], entry(10, 0.5, 0.0, 0.5, 0.0)]
    assert selected(broken, "guard", HEAD, 0.1)["step"] == 0
    assert passes_guard(HISTORY[0]["metrics"], HISTORY[0]["metrics"], 0.0)


def test_validator_keeps_the_picked_steps_weights_and_puts_them_back(tmp_path, monkeypatch):
    from stages.rl import validator as vmod

    model = torch.nn.Linear(3, 2)
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    model.register_parameter("frozen", frozen)
    v = vmod.Validator([{"task": "tg"}, {"task": "tracking"}], None, ValidationParams(per_task=1, select="guard"),
                       16, False, tmp_path, headline=HEAD)
    v.resume(0)
    script = iter(HISTORY)
    monkeypatch.setattr(vmod.Validator, "validate", lambda self, m, step: self._record(m, next(script)))
    weights = {}
    for h in HISTORY:
        with torch.no_grad():
            model.weight.add_(1.0)
        weights[h["step"]] = model.weight.detach().clone()
        v.validate(model, h["step"])
    assert v.saved_step == 50 and [p.name for p in (tmp_path / "validation").glob("*.safetensors")] == \
        ["weights-50.safetensors"]
    pick = v.finish(model, final_step=150)
    assert pick["step"] == 50 and torch.equal(model.weight, weights[50])
    assert v.summary(pick, 150)["selected_step"] == 50

    # a resumed run keeps the history up to its step, and the weights it still has
    w = vmod.Validator([{"task": "tg"}], None, ValidationParams(per_task=1, select="guard"), 16, False, tmp_path,
                       headline=HEAD)
    w.resume(100)
    assert [h["step"] for h in w.history] == [0, 50, 100] and w.saved_step == 50
