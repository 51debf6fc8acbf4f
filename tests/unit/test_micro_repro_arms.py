"""The supervised arm of the micro-reproduction and its comparison with GRPO: the validation split never touches
a GRPO subset's or the held-out videos, the choice of lr and epochs is the best validation score, the GRPO arm's
resumable results are not invalidated by the SFT arm's settings, and the mean-of-seeds interval is the numpy
recomputation of its definition."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recipes.micro_repro import config_key, curve_settings, nested_subsets  # noqa: E402
from recipes.micro_repro_arms import verdict  # noqa: E402
from recipes.micro_repro_sft import best_trial, selection_score, validation_rows  # noqa: E402
from stages import bootstrap  # noqa: E402

RECIPE = ROOT / "recipes/micro-repro.yaml"


def train_rows() -> list[dict]:
    rows = []
    for v in range(40):  # every video has a tg and a qa sample, as the synthetic benchmark's do
        rows += [{"id": f"v{v}#0", "task": "tg", "video_id": f"v{v}"}, {"id": f"v{v}_mc0", "task": "qa", "video_id": f"v{v}"}]
    return rows


def test_validation_split_never_uses_a_video_of_any_grpo_subset():
    rows = train_rows()
    largest = nested_subsets(rows, [0, 4, 8], seed=0)[8]
    val = validation_rows(rows, largest, per_task=5, seed=0)
    assert {r["task"] for r in val} == {"tg", "qa"} and len(val) == 10
    assert not {r["video_id"] for r in val} & {r["video_id"] for r in largest}
    assert val == validation_rows(rows, largest, per_task=5, seed=0)  # seeded
    assert len(validation_rows(rows, largest, per_task=1000, seed=0)) == 2 * (40 - len({r["video_id"] for r in largest}))


def test_choice_is_the_best_validation_score_and_ties_take_fewer_epochs_then_the_smaller_lr():
    trials = [{"lr": 1e-3, "epochs": 2, "score": 0.30}, {"lr": 3e-4, "epochs": 4, "score": 0.41},
              {"lr": 1e-4, "epochs": 8, "score": 0.41}, {"lr": 1e-4, "epochs": 4, "score": 0.41}]
    assert best_trial(trials) == {"lr": 1e-4, "epochs": 4, "score": 0.41}
    assert selection_score({"tg": {"mIoU": 0.2}, "qa": {"accuracy": 0.6}, "gqa": {"accuracy": 1.0}}) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        selection_score({"tg": {"R@0.5": 0.2}})


def test_sft_settings_do_not_change_the_grpo_arms_key_but_change_their_own():
    base = curve_settings(RECIPE, None)
    other = {**base, "sft_lrs": [5e-4], "arms": ["grpo", "sft"]}
    assert config_key("x", base) == config_key("x", other)  # GRPO results stay resumable
    assert config_key("x", base, "sft") != config_key("x", other, "sft")
    assert curve_settings(RECIPE, None, None, "sft,grpo")["arms"] == ["sft", "grpo"]
    with pytest.raises(ValueError):
        curve_settings(RECIPE, None, None, "ppo")


def tg(ious):
    return [{"iou": v, "parsed": True} for v in ious]


def test_mean_of_seeds_interval_is_its_numpy_definition_and_one_run_each_is_the_paired_interval():
    rng = np.random.default_rng(1)
    a1, a2, b1, b2 = (rng.random(9) for _ in range(4))
    got = bootstrap.paired_mean_interval("tg", [tg(a1), tg(a2)], [tg(b1), tg(b2)], level=0.9, resamples=400,
                                         seed=3)["mIoU"]
    idx = np.random.default_rng(3).integers(0, 9, size=(400, 9))
    diffs = [(a1[ix].mean() + a2[ix].mean()) / 2 - (b1[ix].mean() + b2[ix].mean()) / 2 for ix in idx]
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.percentile(diffs, [5, 95])), abs=1e-9)
    assert got["delta"] == pytest.approx((a1.mean() + a2.mean() - b1.mean() - b2.mean()) / 2, abs=1e-9)
    assert got["runs"] == [2, 2]
    one = bootstrap.paired_mean_interval("tg", [tg(a1)], [tg(b1)], resamples=300, seed=2)["mIoU"]
    ref = bootstrap.paired_interval("tg", tg(a1), tg(b1), resamples=300, seed=2)["mIoU"]
    assert (one["delta"], one["lo"], one["hi"]) == (ref["delta"], ref["lo"], ref["hi"])
    with pytest.raises(ValueError):
        bootstrap.paired_mean_interval("tg", [tg(a1)], [tg(b1[:4])])


def test_verdict_reads_the_interval_of_sft_minus_grpo():
    assert verdict({"sft_minus_grpo": {"lo": 0.01, "hi": 0.2}}) == "SFT better"
    assert verdict({"sft_minus_grpo": {"lo": -0.2, "hi": -0.01}}) == "GRPO better"
    assert verdict({"sft_minus_grpo": {"lo": -0.2, "hi": 0.01}}) == "no significant difference"
