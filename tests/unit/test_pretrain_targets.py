"""The pretraining recipe's targets and row selection (recipes/pretrain_base.py), computed by hand."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recipes import pretrain_base as pb  # noqa: E402
from stages import sft  # noqa: E402

TIMES = [0.0, 1.125, 2.25, 3.375, 4.5, 5.625, 6.75, 7.875]


def test_shown_span_is_what_the_frames_show():
    # docs/base-model.md's examples: frames at 2.25 and 3.375 s inside [2.00, 4.50] -> 2.25 to 4.50
    assert pb.shown_span([2.0, 4.5], TIMES) == [2.25, 4.5]
    assert pb.shown_span([1.25, 2.5], TIMES) == [2.25, 3.5]
    assert pb.shown_span([1.2, 2.2], TIMES) is None


def test_centre_region_scales_about_the_centre():
    assert pb.centre_region([0.2, 0.4, 0.6, 0.8], 0.5) == [0.3, 0.5, 0.5, 0.7]


def _rows():
    return [{"id": f"{t}-{k}", "task": t} for t in ("tg", "tracking", "qa") for k in range(10)]


def test_selection_without_caps_is_the_sft_stages():
    rows = _rows()
    assert pb.select_training_rows(rows, ["tg", "tracking", "qa"], 4, {}, {}, 0) == \
        sft.select_rows(rows, 4, 0)


def test_caps_and_repeats_per_task():
    rows = _rows()
    out = pb.select_training_rows(rows, ["tg", "tracking"], 3, {"tracking": 8}, {"tg": 3}, 0)
    tg = [r["id"] for r in out if r["task"] == "tg"]
    tracking = [r["id"] for r in out if r["task"] == "tracking"]
    assert len(tg) == 9 and len(set(tg)) == 3 and tg[:3] * 3 == tg
    assert len(tracking) == 8 and len(set(tracking)) == 8
    assert not [r for r in out if r["task"] == "qa"]


def test_row_scale_fixed_or_one_draw_per_sequence():
    row = {"id": "seq-7", "task": "tracking"}
    assert pb.row_scale(row, 0.7, 0) == 0.7
    a = pb.row_scale(row, [0.55, 0.85], 0)
    assert 0.55 <= a <= 0.85 and a == pb.row_scale(dict(row), [0.55, 0.85], 0)
    draws = {pb.row_scale({"id": f"seq-{k}"}, [0.55, 0.85], 0) for k in range(50)}
    assert len(draws) == 50 and min(draws) < 0.6 and max(draws) > 0.8  # spread over the range
    sol = pb.related_solution({"id": "seq-7", "task": "tracking", "solution": {"boxes": [[0.2, 0.2, 0.6, 0.6]]}},
                              [0.55, 0.85], 0)
    w = sol["boxes"][0][2] - sol["boxes"][0][0]
    assert w == pytest.approx(0.4 * a, abs=0.011)


def test_bad_recipe_settings_are_refused(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("pretrain:\n  box_scale: [0.9, 0.5]\n")
    with pytest.raises(ValueError, match="box_scale"):
        pb.settings(bad)
    bad.write_text("pretrain:\n  repeat: {tg: 0}\n")
    with pytest.raises(ValueError, match="repeat"):
        pb.settings(bad)
    bad.write_text("pretrain:\n  init_box: random\n")
    with pytest.raises(ValueError, match="init_box"):
        pb.settings(bad)


def test_phases_default_to_one_phase_and_are_checked():
    cfg = {"loss": "token", "init_box": "gold", "phases": []}
    assert pb.training_phases(cfg, ["tg", "qa"], 20) == [{"tasks": ["tg", "qa"], "epochs": 20, "loss": "token",
                                                          "init_box": "gold"}]
    cfg = {"loss": "row", "init_box": "gold", "phases": [
        {"tasks": ["tg"], "epochs": 3}, {"tasks": ["tg", "qa"], "epochs": 2, "loss": "token", "init_box": "other"}]}
    assert pb.training_phases(cfg, ["tg", "qa"], 5) == [
        {"tasks": ["tg"], "epochs": 3, "loss": "row", "init_box": "gold"},
        {"tasks": ["tg", "qa"], "epochs": 2, "loss": "token", "init_box": "other"}]
    for bad in ({"tasks": ["tracking"], "epochs": 2}, {"tasks": ["tg"], "epochs": 0}, {"tasks": [], "epochs": 1},
                {"tasks": ["tg"], "epochs": 1, "loss": "mean"}, {"tasks": ["tg"], "epochs": 1, "lr": 1},
                {"tasks": ["tg"], "epochs": 1, "init_box": "none"}):
        with pytest.raises(ValueError, match="phases"):
            pb.training_phases({"loss": "token", "init_box": "gold", "phases": [bad]}, ["tg", "qa"], bad["epochs"])
    with pytest.raises(ValueError, match="add up"):
        pb.training_phases({"loss": "token", "init_box": "gold", "phases": [{"tasks": ["tg"], "epochs": 3}]},
                           ["tg", "qa"], 20)


def test_init_box_other_gives_every_tracking_prompt_another_sequences_box():
    from stages.tasks import render_prompt

    rows = [{"id": f"seq{k}", "task": "tracking", "problem": (pr := {"object": "o", "init_box": [k / 10, 0, 1, 1]}),
             "prompt": render_prompt("tracking", pr, think=False)} for k in range(6)]
    rows.append({"id": "v0", "task": "tg", "problem": {"query": "q"}, "prompt": "tg prompt"})
    assert pb.prompt_rows(rows, "gold", 0) is rows
    moved = pb.prompt_rows(rows, "other", 0)
    own = {r["id"]: r["problem"]["init_box"] for r in rows[:6]}
    given = {r["id"]: r["problem"]["init_box"] for r in moved[:6]}
    assert all(given[i] != own[i] for i in own)                      # no sequence keeps its own box
    assert sorted(map(tuple, given.values())) == sorted(map(tuple, own.values()))  # each box given exactly once
    for r in moved[:6]:  # the text the model reads says the moved box (build_samples rendered the true one)
        box = "[" + ", ".join(f"{v:.3f}" for v in r["problem"]["init_box"]) + "]"
        assert f"inside the box {box}." in r["prompt"] and r["prompt"] == render_prompt("tracking", r["problem"],
                                                                                          think=False)
    assert moved[6] is rows[6] and rows[0]["problem"]["init_box"] == [0, 0, 1, 1]  # other tasks, inputs untouched
    assert pb.prompt_rows(list(reversed(rows)), "other", 0)[::-1] == moved  # by sample id, not by order
    assert pb.prompt_rows(rows, "other", 1) != moved
    with pytest.raises(ValueError, match="two tracking"):
        pb.prompt_rows(rows[:1], "other", 0)


def test_follows_and_distinct_answers():
    # a constant answer scores exactly its shuffles: it does not follow; one above the range does
    metrics = {"tg": {"mIoU": 0.30}, "qa": {"accuracy": 0.1234567}}
    shuffled = {"tg": {"mIoU": {"mean": 0.2, "lo": 0.15, "hi": 0.25}},
                "qa": {"accuracy": {"mean": 0.123457, "lo": 0.123457, "hi": 0.123457}}}
    assert pb.follows(metrics, shuffled) == {"tg": True, "qa": False}
    rows = [{"task": "tg"}] * 3 + [{"task": "qa"}] * 2
    assert pb.distinct_answers(rows, ["a", "a ", "b", "A", "A"]) == {"qa": 1, "tg": 2}


def test_span_shift_moves_the_timing_targets_on_the_grid(monkeypatch, tmp_path):
    """pretrain.span_shift: the tg and gqa targets (the span the frames show) moved by a fixed or a per-sample
    drawn number of seconds, on the 0.25 s grid, kept inside the video; tracking and letters untouched."""
    monkeypatch.setattr(pb, "frame_times", lambda row: TIMES)
    tg = {"id": "v1#0", "task": "tg", "problem": {"duration": 8.0}, "solution": {"timestamps": [2.0, 4.5]}}
    assert pb.related_solution(tg, 0.7, 0)["timestamps"] == [2.25, 4.5]  # shown span, unshifted
    assert pb.related_solution(tg, 0.7, 0, -0.5)["timestamps"] == [1.75, 4.0]
    drawn = pb.row_scale(tg, [-0.5, 0.0], 0, "shift:")  # its own draw: not the tracking scale's
    assert -0.5 <= drawn <= 0.0 and drawn != pb.row_scale(tg, [-0.5, 0.0], 0)
    lo = round((2.25 + drawn) * 4) / 4
    assert pb.related_solution(tg, 0.7, 0, [-0.5, 0.0])["timestamps"] == [lo, round((4.5 + drawn) * 4) / 4]
    draws = {pb.row_scale({"id": f"v{k}#0"}, [-0.5, 0.0], 0, "shift:") for k in range(50)}
    assert min(draws) < -0.4 and max(draws) > -0.1
    # kept inside [0, duration] and at least one grid step long
    assert pb.shifted([0.0, 1.0], -0.5, 8.0) == [0.0, 0.5]
    assert pb.shifted([7.5, 8.0], 0.5, 8.0) == [7.75, 8.0]
    gqa = {"id": "v1_1", "task": "gqa", "problem": {"duration": 8.0},
           "solution": {"answer": "A", "glue": [[0.5, 2.25], [1.2, 2.2]]}}
    assert pb.related_solution(gqa, 0.7, 0, -0.5) == {"answer": "A", "glue": [[0.5, 1.75], [1.2, 2.2]]}
    box = {"id": "s", "task": "tracking", "solution": {"boxes": [[0.2, 0.2, 0.6, 0.6]]}}
    assert pb.related_solution(box, 0.5, 0, -0.5) == pb.related_solution(box, 0.5, 0)
    bad = tmp_path / "r.yaml"
    bad.write_text("pretrain:\n  span_shift: [0.0, -0.5]\n")
    with pytest.raises(ValueError, match="span_shift"):
        pb.settings(bad)
