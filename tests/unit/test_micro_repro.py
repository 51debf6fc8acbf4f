"""The micro-reproduction recipe's own logic: the recipe is valid params, sizes are nested subsets, and the two
reference lines (the warm start's answer prior, the best blind answer) score what they should."""
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recipes.micro_repro import (  # noqa: E402
    blind_reference, config_key, curve_settings, finished_sizes, held_for_grpo, nested_subsets, recipe_params, seed_summary, start_model,
    table,
    warm_start_pool,
)

RECIPE = ROOT / "recipes/micro-repro.yaml"


def rows_of(task: str, n: int, **extra) -> list[dict]:
    return [{"id": f"{task}{i}", "task": task, **extra} for i in range(n)]


def test_recipe_is_valid_params_and_starts_from_the_shipped_base():
    params = recipe_params(RECIPE, [])
    assert not params.sft.enabled
    assert start_model(params) == str(ROOT / "pretrained/tiny-qwen2_5_vl-v6")  # the demo's base
    assert start_model(recipe_params(ROOT / "recipes/micro-repro-v1.yaml", [])) == str(ROOT / "pretrained/tiny-qwen2_5_vl")
    assert start_model(recipe_params(RECIPE, ["sft.enabled=true"])) == params.sft.out_dir
    assert params.train.num_generations == 8 and params.build_samples.think is False
    cfg = curve_settings(RECIPE, None)
    assert cfg["sizes"][0] == 0 and cfg["sizes"] == sorted(cfg["sizes"])
    assert len(cfg["seeds"]) == 3
    assert curve_settings(RECIPE, "0,4")["sizes"] == [0, 4]
    assert curve_settings(RECIPE, None, "5")["seeds"] == [5]
    with pytest.raises(ValueError):
        curve_settings(RECIPE, "8,4")
    with pytest.raises(ValueError):
        curve_settings(RECIPE, None, "1,1")


def test_resume_keeps_only_sizes_made_with_the_same_params_and_seeds(tmp_path):
    import json

    cfg = curve_settings(RECIPE, "0,16,64")
    key = config_key("train: {seed: 0}\n", cfg)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"config_key": key, "sizes": [{"n": 0}, {"n": 32}, {"n": 64}]}))
    assert sorted(finished_sizes(path, key, cfg)) == [0, 64]  # 32 is not asked for; 16 was never run
    assert finished_sizes(path, config_key("train: {seed: 1}\n", cfg), cfg) == {}  # other params
    other_seeds = curve_settings(RECIPE, "0,16,64", "0,1")
    assert config_key("train: {seed: 0}\n", other_seeds) != key  # other GRPO seeds, other rows
    assert curve_settings(RECIPE, "0,64")["sizes"] != cfg["sizes"] and config_key(
        "train: {seed: 0}\n", curve_settings(RECIPE, "0,64")) == key  # the size list itself is not in the key
    assert finished_sizes(tmp_path / "missing.json", key, cfg) == {}


def test_seed_summary_gives_mean_spread_and_range():
    runs = [{"metrics": {"tg": {"mIoU": v, "count": 4}}} for v in (0.2, 0.4, 0.6)]
    s = seed_summary(runs)
    assert s["mean"]["tg"]["mIoU"] == pytest.approx(0.4) and s["sd"]["tg"]["mIoU"] == pytest.approx(0.2)
    assert (s["min"]["tg"]["mIoU"], s["max"]["tg"]["mIoU"]) == (0.2, 0.6) and "count" not in s["mean"]["tg"]
    assert seed_summary(runs[:1])["sd"]["tg"]["mIoU"] == 0.0


def test_the_table_says_whether_the_answers_use_the_video():
    m = {"tg": {"mIoU": 0.5}}
    results = {"seeds": [0, 1], "reference": m, "blind_best": m, "gain_at_largest": {"tg.mIoU": 0.1},
               "sizes": [{"n": 0, "runs": [{}], "metrics": m, "video_swap": {"tg": 0.25, "qa": 0.0}},
                         {"n": 16, "runs": [{}, {}], "metrics": m, "sd": m, "steps": 8, "train_cpu_s": 60.0,
                          "video_swap": {"tg": 0.3125, "qa": -0.01}}]}
    text = table(results)
    assert "| 0 | +0.250 | +0.000 |" in text and "| 16 | +0.312 | -0.010 |" in text
    del results["sizes"][1]["video_swap"], results["sizes"][0]["video_swap"]
    assert "Do the answers use the video?" not in table(results)  # evaluate.video_swap 0: no such table


def test_sizes_are_nested_per_task_and_reproducible():
    rows = rows_of("tg", 10) + rows_of("qa", 10) + rows_of("tg", 3)  # repeated ids count once
    subsets = nested_subsets(rows, [0, 2, 4, 8], seed=0)
    assert subsets[0] == []
    for small, big in ((2, 4), (4, 8)):
        assert {r["id"] for r in subsets[small]} < {r["id"] for r in subsets[big]}
    for n in (2, 4, 8):
        assert sorted(r["task"] for r in subsets[n]) == ["qa"] * n + ["tg"] * n
    assert nested_subsets(rows, [0, 2, 4, 8], seed=0) == subsets
    with pytest.raises(ValueError, match="not enough training samples"):
        nested_subsets(rows, [0, 11], seed=0)


def test_warm_start_never_sees_a_grpo_sample():
    rows = rows_of("tg", 10) + rows_of("qa", 10)
    subsets = nested_subsets(rows, [0, 2, 4], seed=0)
    pool = warm_start_pool(rows, subsets[4])
    assert {r["id"] for r in pool}.isdisjoint(r["id"] for r in subsets[4])
    assert len(pool) + len(subsets[4]) == len(rows)  # nothing else is left out


def test_a_shorter_curve_warms_up_on_the_same_pool_as_the_full_one():
    rows = rows_of("tg", 10) + rows_of("qa", 10)
    full = held_for_grpo(rows, 8, 8, seed=0)
    assert held_for_grpo(rows, 2, 8, seed=0) == full  # --sizes 0,2 of a recipe whose curve ends at 8
    assert {r["id"] for r in held_for_grpo(rows, 2, 64, seed=0)} == {r["id"] for r in nested_subsets(rows, [2], 0)[2]}


def test_blind_reference_fits_the_interval_and_the_letter_on_train():
    rng = random.Random(0)
    train = [{"id": f"t{i}", "task": "tg", "problem": {"duration": 10.0},
              "solution": {"timestamps": [2.0 + rng.uniform(-0.2, 0.2), 6.0]}} for i in range(20)]
    train += [{"id": f"q{i}", "task": "qa", "problem": {}, "solution": {"answer": "C" if i % 3 else "A"}}
              for i in range(12)]
    evals = [{"id": "e1", "task": "tg", "problem": {"duration": 20.0}, "solution": {"timestamps": [4.0, 12.0]}},
             {"id": "e2", "task": "qa", "problem": {}, "solution": {"answer": "C"}},
             {"id": "e3", "task": "tracking", "problem": {"init_box": [0.1, 0.1, 0.3, 0.3]},
              "solution": {"boxes": [[0.1, 0.1, 0.3, 0.3]] * 4 + [[0.5, 0.5, 0.7, 0.7]] * 4}}]
    got = blind_reference(train, evals, think=False)
    assert got["tg"]["mIoU"] == pytest.approx(1.0)  # [0.2, 0.6] of the duration fits both
    assert got["qa"]["accuracy"] == 1.0  # the most frequent letter
    assert got["tracking"]["AO"] == pytest.approx(0.5)  # the static tracker: right on half the frames


def test_colour_probe_asks_the_video_and_answers_in_the_qa_layout():
    from recipes.warm_start_probe import colour_row
    from stages.sft import target_text

    row = {"id": "v1#0", "task": "tg", "prompt": "find when: a white triangle appears",
           "solution": {"timestamps": [1, 2]}, "problem": {"sentence": "a white triangle appears and moves right"}}
    got = colour_row(row)
    assert "white" not in got["prompt"]  # the answer is only in the video
    assert target_text(got["task"], got["solution"], think=False) == "<answer>white</answer>"
