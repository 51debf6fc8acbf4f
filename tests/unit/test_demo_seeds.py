"""bench/demo_seeds.py's command line: a variant is a name and train.* settings (the data are built once)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from demo_seeds import parse_variant  # noqa: E402


def test_variant_is_a_name_and_train_settings():
    assert parse_variant("grpo=") == ("grpo", [])
    assert parse_variant("b=train.beta=0.2,train.loss_type=dapo") == ("b", ["train.beta=0.2", "train.loss_type=dapo"])
    assert parse_variant("g=train.task_groups=[[tracking], [tg, qa]],train.seed=1") == (
        "g", ["train.task_groups=[[tracking], [tg, qa]]", "train.seed=1"])  # commas inside a YAML value stay


@pytest.mark.parametrize("bad", ["=train.beta=0.2", "x=train.beta", "x=build_samples.weights={tg: 2}"])
def test_a_variant_that_would_need_other_data_or_is_malformed_is_refused(bad):
    with pytest.raises(SystemExit):
        parse_variant(bad)


def test_results_accumulate_across_calls(tmp_path):
    from demo_seeds import previous_runs

    path = tmp_path / "results.json"
    assert previous_runs(path) == []
    path.write_text('{"base": {}, "runs": [{"variant": "a", "seed": 0}, {"variant": "b", "seed": 1}]}')
    assert [r["variant"] for r in previous_runs(path)] == ["a", "b"]


def test_summary_line_shows_intervals_and_whether_answers_follow():
    from demo_seeds import summary_line

    row = {"variant": "v", "seed": 2, "train_wall_s": 195.4, "selected_step": 160,
           "tg.mIoU": {"delta": 0.0532, "lo": 0.0331, "hi": 0.0743},
           "follows": {"tg": {"own": 0.68, "lo": 0.24, "hi": 0.33, "follows": True},
                       "qa": {"own": 0.5, "lo": 0.5, "hi": 0.5, "follows": False}}}
    assert summary_line(row) == ("v seed 2 (195 s, step 160): tg.mIoU +0.053 [+0.033, +0.074]; "
                                 "follows the sample: tg yes, qa NO")
