"""`videorft summary`: per task base, candidate, the difference with its interval, parse rates, the blind line and
a verdict; it says plainly when nothing was learned."""
import json

import yaml

from videorft import cli
from stages.evaluate import intervals
from stages.params import EvaluateParams
from tests.eval_tables import base_values, metrics, noisy, samples, shifted

HOW = {"method": "paired bootstrap, percentile", "level": 0.95, "resamples": 2000, "seed": 0}


def iv(delta, lo, hi):
    return {"delta": delta, "lo": lo, "hi": hi, "level": 0.95, "resamples": 2000, "n": 48, "paired": True}


def eval_json(cand_tg=0.50, tg=iv(0.12, 0.05, 0.19), qa=iv(-0.1, -0.2, -0.02), blind_tg=0.45) -> dict:
    cand = {"tg": {"mIoU": cand_tg, "parse_rate": 0.98, "count": 48},
            "tracking": {"AO": 0.2, "parse_rate": 1.0, "count": 48},
            "qa": {"accuracy": 0.5, "parse_rate": 0.9, "count": 48}}
    base = {"tg": {"mIoU": 0.38, "parse_rate": 1.0, "count": 48}, "tracking": {"AO": 0.19, "parse_rate": 1.0},
            "qa": {"accuracy": 0.6, "parse_rate": 1.0}}
    return {"candidate": {"metrics": cand}, "baseline": {"metrics": base},
            "intervals": {"tg": {"mIoU": tg}, "tracking": {"AO": iv(0.01, -0.02, 0.04)}, "qa": {"accuracy": qa}},
            "interval": HOW, "samples": 144, "samples_per_task": {"qa": 48, "tg": 48, "tracking": 48},
            "blind": {"metrics": {"tg": {"mIoU": blind_tg}, "tracking": {"AO": 0.27}, "qa": {"accuracy": 0.59}}}}


def summary(tmp_path, capsys, result: dict) -> list[str]:
    (tmp_path / "eval.json").write_text(json.dumps(result))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {"out_dir": str(tmp_path)}, "train": {"out_dir": str(tmp_path / "none")},
        "register": {"out": str(tmp_path / "none.json")}}))
    assert cli.main(["summary", "--params", str(tmp_path / "params.yaml")]) == 0
    return capsys.readouterr().out.splitlines()


def test_summary_prints_each_task_with_its_interval_parse_rates_blind_line_and_verdict(tmp_path, capsys):
    out = summary(tmp_path, capsys, eval_json())
    assert ("tg mIoU: base 0.380 | candidate 0.500 | difference +0.120 [+0.050, +0.190] | parse rate 1.000 -> 0.980"
            " | blind line 0.450") in out
    assert "  tg mIoU: learned (+0.120 [+0.050, +0.190])" in out
    assert "  tracking AO: no significant change (+0.010 [-0.020, +0.040])" in out
    assert "  qa accuracy: WORSE (-0.100 [-0.200, -0.020])" in out
    assert out[-1] == "Learned beyond noise (95% interval): tg mIoU"
    assert any(line.startswith("evaluation        : 144 held-out samples (qa: 48, tg: 48") for line in out)


def test_summary_says_plainly_when_nothing_was_learned(tmp_path, capsys):
    out = summary(tmp_path, capsys, eval_json(tg=iv(0.02, -0.03, 0.07), qa=iv(0.0, -0.05, 0.05)))
    assert "  tg mIoU: no significant change (+0.020 [-0.030, +0.070])" in out
    assert out[-1] == "Nothing was learned: no task's headline metric improved beyond noise (95% interval)"


def test_a_gain_that_only_reaches_the_blind_line_is_flagged(tmp_path, capsys):
    out = summary(tmp_path, capsys, eval_json(cand_tg=0.44, blind_tg=0.45))
    assert "  tg mIoU: learned, but not above the blind line (+0.120 [+0.050, +0.190])" in out


def test_summary_of_a_real_evaluation_table_refuses_noise(tmp_path, capsys):
    """Intervals computed from per-sample rows (as evaluate does): a candidate that is the base plus noise."""
    base = base_values()
    table = samples(noisy(base, seed=2), base)
    result = {"candidate": {"metrics": metrics(table, "candidate")},
              "baseline": {"metrics": metrics(table, "baseline")},
              "intervals": intervals(table, EvaluateParams()), "interval": HOW, "samples": 192}
    out = summary(tmp_path, capsys, result)
    assert out[-1] == "Nothing was learned: no task's headline metric improved beyond noise (95% interval)"
    assert "blind line n/a" in next(line for line in out if line.startswith("tg mIoU: base"))
    learned = samples(shifted(base, tg=0.1), base)
    result.update(candidate={"metrics": metrics(learned, "candidate")}, intervals=intervals(learned, EvaluateParams()))
    assert summary(tmp_path, capsys, result)[-1] == "Learned beyond noise (95% interval): tg mIoU"


def test_summary_of_an_evaluation_without_intervals_says_so(tmp_path, capsys):
    old = eval_json()
    del old["intervals"], old["interval"], old["blind"]
    out = summary(tmp_path, capsys, old)
    assert "difference n/a (no interval)" in next(line for line in out if line.startswith("tg mIoU: base"))
    assert "  tg mIoU: not judged (no interval)" in out
    assert out[-1] == "Nothing was learned: no task's headline metric improved beyond noise (no intervals)"


def test_summary_says_which_validated_step_became_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"step": s, "metrics": {}} for s in (0, 25, 50)]
    (run / "train_summary.json").write_text(json.dumps({
        "steps": 50, "samples": 800, "seconds": 1.0, "mlflow_run_id": "r",
        "validation": {"select": "guard", "rows": 72, "selected_step": 25, "final_step": 50, "history": history}}))
    (tmp_path / "eval.json").write_text(json.dumps(eval_json()))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {"out_dir": str(tmp_path)}, "train": {"out_dir": str(run)},
        "register": {"out": str(tmp_path / "none.json")}}))
    assert cli.main(["summary", "--params", str(tmp_path / "params.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert ("validation        : 72 rows answered greedily at steps 0, 25, 50; the model is step 25 (select: guard); "
            "curves: MLflow val/<task>/<metric>, dvc plots") in out
