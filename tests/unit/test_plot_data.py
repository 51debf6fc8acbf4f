"""DVC plot data (stages/eval_plots.py reward_rows, comparison_rows), worked by hand on tiny inputs; dvc.yaml's
top-level plots draw files the evaluate stage writes and keeps in git; `videorft exps` (curated dvc exp show)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stages import eval_plots  # noqa: E402
from videorft.cli import exps_keep, main  # noqa: E402

HISTORY = {
    "reward": [(10, 1.5), (20, 1.25)],
    "rewards/tg_format/mean": [(10, 1.0), (20, 0.5)],
    "rewards/tg_iou/mean": [(10, 0.25), (20, 0.125)],
    "rewards/qa_format/mean": [(20, 1.0)],  # no qa completion in the first logging window
    "rewards/qa_accuracy/mean": [(20, 0.5)],
    "rewards/t_grpo_bonus/mean": [(10, 0.3)],  # not a task's part
    "rewards/tg_iou/std": [(10, 9.0)],  # not a mean
}


def test_reward_rows_sum_each_tasks_part_means_per_step():
    rows = eval_plots.reward_rows(HISTORY, ["tg", "gqa", "qa"])
    assert rows == [
        {"step": 10, "all": 1.5, "tg": 1.25, "gqa": None, "qa": None},
        {"step": 20, "all": 1.25, "tg": 0.625, "gqa": None, "qa": 1.5},
    ]
    assert eval_plots.reward_rows({}, ["tg"]) == []


def test_reward_trend_is_second_half_minus_first_half_with_a_welch_interval():
    rows = [{"step": 10, "all": 1.0, "tg": 1.0, "qa": None}, {"step": 20, "all": 1.0, "tg": 2.0, "qa": 1.0},
            {"step": 30, "all": 1.0, "tg": 3.0, "qa": 1.0}, {"step": 40, "all": 1.0, "tg": 5.0, "qa": 2.0}]
    trend = eval_plots.reward_trend(rows, ["tg", "gqa", "qa"])
    # by hand: first half [1, 2] (mean 1.5, variance 0.5), second [3, 5] (mean 4, variance 2); se = sqrt(0.5/2 + 2/2)
    # = 1.118034; z(0.975) = 1.959964: 2.5 -+ 2.191306. qa has one point in its first half, gqa none: left out.
    assert list(trend) == ["all", "tg"]
    assert trend["tg"] == {"first_half": 1.5, "second_half": 4.0, "delta": 2.5, "lo": 0.308694, "hi": 4.691306,
                           "points": [2, 2], "level": 0.95}
    assert trend["all"]["delta"] == trend["all"]["lo"] == trend["all"]["hi"] == 0.0
    assert eval_plots.reward_trend([], ["tg"]) == {}


def test_report_says_whether_each_training_reward_rose():
    from stages.evaluate import report

    m = {"tg": {"mIoU": 0.3, "parse_rate": 1.0}}
    result = {"candidate": {"metrics": m}, "baseline": {"metrics": m}, "training_reward": {
        "tg": {"first_half": 1.0, "second_half": 1.2, "delta": 0.2, "lo": 0.05, "hi": 0.35},
        "qa": {"first_half": 1.0, "second_half": 0.9, "delta": -0.1, "lo": -0.3, "hi": 0.1}}}
    lines = report(result)
    assert "training reward tg (sampled answers, steps' first half -> second half): 1.000 -> 1.200, " \
           "+0.200 [+0.050, +0.350]: rose" in lines
    assert any(line.startswith("training reward qa") and line.endswith("no significant change") for line in lines)


VALIDATION = {"selected_step": 50, "history": [
    {"step": 0, "metrics": {"tg": {"mIoU": 0.3, "parse_rate": 1.0}, "qa": {"accuracy": 0.5, "parse_rate": 1.0}}},
    {"step": 50, "metrics": {"tg": {"mIoU": 0.4, "parse_rate": 1.0}, "qa": {"accuracy": 0.25, "parse_rate": 1.0}}},
    {"step": 100, "metrics": {"tg": {"mIoU": 0.5, "parse_rate": 0.5}, "qa": {"accuracy": 0.5, "parse_rate": 1.0}}}]}


def test_validation_rows_give_each_tasks_greedy_headline_per_step_and_mark_the_kept_one():
    rows = eval_plots.validation_rows(VALIDATION, ["tg", "gqa", "qa"])
    assert rows == [
        {"step": 0, "tg": 0.3, "gqa": None, "qa": 0.5, "selected": 0},
        {"step": 50, "tg": 0.4, "gqa": None, "qa": 0.25, "selected": 1},
        {"step": 100, "tg": 0.5, "gqa": None, "qa": 0.5, "selected": 0},
    ]
    assert eval_plots.validation_rows(None, ["tg"]) == []


def test_comparison_rows_put_the_difference_interval_around_the_candidate():
    cand = {"tg": {"mIoU": 0.5, "R@0.5": 0.4}, "qa": {"accuracy": 0.25}}
    base = {"tg": {"mIoU": 0.375}, "qa": {"accuracy": 0.5}}
    ivs = {"tg": {"mIoU": {"delta": 0.125, "lo": 0.0625, "hi": 0.25}}}  # qa: no interval
    rows = eval_plots.comparison_rows(cand, base, ivs)
    assert rows == [
        {"task": "tg", "metric": "mIoU", "model": "base", "label": "tg mIoU base", "value": 0.375, "lo": None,
         "hi": None},
        {"task": "tg", "metric": "mIoU", "model": "candidate", "label": "tg mIoU candidate", "value": 0.5,
         "lo": 0.4375, "hi": 0.625},
        {"task": "qa", "metric": "accuracy", "model": "base", "label": "qa accuracy base", "value": 0.5, "lo": None,
         "hi": None},
        {"task": "qa", "metric": "accuracy", "model": "candidate", "label": "qa accuracy candidate", "value": 0.25,
         "lo": None, "hi": None},
    ]


PROBE = {"tg": {"baseline": {"reward": 1.6, "format": 1.0, "iou": 0.6}, "candidate": {"reward": 1.64},
               "delta": 0.04, "lo": 0.02, "hi": 0.06, "prompts": 48, "generations": 4, "verdict": "rose"}}


def test_probe_rows_give_both_models_and_the_interval_on_the_candidate():
    assert eval_plots.probe_rows(PROBE) == [
        {"task": "tg", "model": "base", "label": "tg base", "value": 1.6, "lo": None, "hi": None, "verdict": None},
        {"task": "tg", "model": "candidate", "label": "tg candidate", "value": 1.64, "lo": 1.62, "hi": 1.66,
         "verdict": "rose"}]  # lo/hi: the base plus the interval of the difference; the same keys in every row
    assert eval_plots.probe_rows(None) == []


def test_plot_data_files_are_byte_deterministic(tmp_path):
    cand, base = {"tg": {"mIoU": 1 / 3}}, {"tg": {"mIoU": 0.2}}
    ivs = {"tg": {"mIoU": {"delta": 2 / 15, "lo": 0.01, "hi": 0.3}}}
    a = eval_plots.write_data(tmp_path / "a", cand, base, HISTORY, ivs, ["tg", "qa"], VALIDATION)
    b = eval_plots.write_data(tmp_path / "b", cand, base, dict(reversed(HISTORY.items())), ivs, ["tg", "qa"],
                              VALIDATION)
    assert [p.name for p in a] == [eval_plots.REWARD_CURVES, eval_plots.CANDIDATE_VS_BASE,
                                   eval_plots.VALIDATION_CURVES, eval_plots.REWARD_PROBE]
    assert json.loads(a[3].read_text()) == []  # evaluate.reward_probe off: no rows
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert json.loads(a[1].read_text())[1]["value"] == 0.333333  # rounded to DIGITS


def _fields(entry) -> set[str]:
    """Fields an x or y of a dvc.yaml plot definition names: a field, a list, or {file: field(s)}."""
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, list):
        return set(entry)
    return set().union(*(_fields(v) for v in entry.values()))


def test_dvc_yaml_plots_draw_files_the_evaluate_stage_writes_and_keeps_in_git():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out_dir = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]["out_dir"]
    written = {f"{out_dir}/plots/{name}" for name in (eval_plots.REWARD_CURVES, eval_plots.CANDIDATE_VS_BASE,
                                                      eval_plots.VALIDATION_CURVES, eval_plots.REWARD_PROBE)}
    outs = {next(iter(o)): o[next(iter(o))] for o in dvc["stages"]["evaluate"]["outs"] if isinstance(o, dict)}
    assert written <= set(outs) and all(outs[f] == {"cache": False} for f in written)  # in git: plots diff reads it
    assert {"stages/evaluate.py", "stages/eval_plots.py"} <= set(dvc["stages"]["evaluate"]["deps"])
    rows = {f"{out_dir}/plots/{eval_plots.REWARD_CURVES}": eval_plots.reward_rows(HISTORY, ["tg", "gqa",
                                                                                          "tracking", "qa"]),
            f"{out_dir}/plots/{eval_plots.CANDIDATE_VS_BASE}": eval_plots.comparison_rows(
                {"tg": {"mIoU": 0.5}}, {"tg": {"mIoU": 0.4}}),
            f"{out_dir}/plots/{eval_plots.VALIDATION_CURVES}": eval_plots.validation_rows(
                VALIDATION, ["tg", "gqa", "tracking", "qa"]),
            f"{out_dir}/plots/{eval_plots.REWARD_PROBE}": eval_plots.probe_rows(PROBE)}
    drawn = set()
    for definition in dvc["plots"]:
        (_, spec), = definition.items()
        assert spec["template"] in {"linear", "bar_horizontal"}
        files = set(spec["y"])
        drawn |= files
        for f in files:  # every field a plot reads is in every row the stage writes
            assert (_fields(spec["x"]) | _fields(spec["y"][f])) <= set(rows[f][0]), (f, spec)
    assert drawn == written
    trained = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["tasks"]  # the demo's (stvg: not)

    curves = [s for d in dvc["plots"] for s in d.values() if s["template"] == "linear"]
    assert set(curves[0]["y"][f"{out_dir}/plots/{eval_plots.REWARD_CURVES}"]) == {eval_plots.ALL, *trained}
    assert set(curves[1]["y"][f"{out_dir}/plots/{eval_plots.VALIDATION_CURVES}"]) == set(trained)
    ignored = subprocess.run(["git", "check-ignore", *sorted(written)], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout == ""  # not git-ignored


def test_exps_keep_selects_the_curated_columns():
    keep = re.compile(exps_keep())
    for col in ("Experiment", "Created", "candidate.metrics.tg.mIoU", "intervals.gqa.evidence_mIoU.lo",
                "intervals.tracking.AO.hi", "general.kept", "train.learning_rate", "train.max_steps"):
        assert keep.match(col), col
    for col in ("rev", "typ", "parent", "baseline.metrics.tg.mIoU", "candidate.metrics.tg.R@0.5",
                "intervals.tg.mIoU.n", "intervals.tg.mIoUx.lo", "train.out_dir", "synthesize.seed"):
        assert not keep.match(col), col


def test_exps_prints_and_runs_dvc_exp_show_on_this_repository(capsys, monkeypatch):
    assert main(["exps", "--print", "--md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dvc exp show --no-pager --drop '.*' --keep ") and out.rstrip().endswith("--md")
    if shutil.which("git") is None:
        pytest.skip("no git")
    monkeypatch.chdir(ROOT)
    res = subprocess.run([sys.executable, "-m", "videorft", "exps", "-n", "1", "--csv"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0].split(",")
    assert "candidate.metrics.tg.mIoU" in header and "train.max_steps" in header
    assert len(header) <= 30 and not any(h.startswith("baseline.") for h in header)
