"""Rules between params sections, checked when params load (stages/params.cross_section_problems): each broken
rule is refused with the knobs named; every shipped configuration (params.yaml and each recipe) loads."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recipes.apply import overrides  # noqa: E402
from stages.params import load_params  # noqa: E402

PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_configuration_loads(recipe):
    load_params(PARAMS)
    load_params(PARAMS, overrides(recipe, skip=("micro_repro", "pretrain")))


@pytest.mark.parametrize("override, named", [
    ("train.tasks=[tg, stvg]", "train.tasks has ['stvg']"),
    ("build_samples.annotations={tg: a.json, gqa: b.json, tracking: c.json, qa: d.json, foo: e.json}",
     "unknown tasks ['foo']"),
    ("synthesize.tasks={foo: {videos: 2}}", "synthesize.tasks names unknown tasks ['foo']"),
    ("train.num_generations=3", "per_device_train_batch_size=16 is not a multiple of train.num_generations=3"),
    ("train.num_generations=1", "at least 2 completions"),
    ("synthesize.num_boxes=16", "synthesize.num_boxes=16 and extract_frames.tracking_frames=8"),
    ("extract_frames.tracking_frames=16", "extract_frames.tracking_frames=16 must both be"),
    ("extract_frames.max_frames=2", "extract_frames: need 1 <= min_frames <= max_frames"),
    ("promote.improve={tg.miou: 0.0}", "promote.improve: 'tg.miou': tg reports no metric 'miou'"),
    ("promote.keep={general.accuracy: 0.02}", "promote.keep: 'general.accuracy' names no task"),
    ("evaluate.general_metric=acc", "evaluate.general_task/general_metric: 'qa.acc'"),
])
def test_a_broken_rule_is_refused_naming_the_knobs(override, named):
    with pytest.raises(ValueError, match="params do not agree across sections") as e:
        load_params(PARAMS, [override])
    assert named in str(e.value)


def test_tasks_must_be_annotated_and_gate_metrics_evaluated():
    only_tg = ["build_samples.annotations={tg: data/tg.json}"]
    with pytest.raises(ValueError) as e:
        load_params(PARAMS, only_tg)
    text = str(e.value)
    assert "train.tasks has ['gqa', 'tracking', 'qa']" in text and "'qa.accuracy': qa is not evaluated" in text
    ok = load_params(PARAMS, only_tg + ["train.tasks=[tg]", "evaluate.general_task=tg", "evaluate.general_metric=mIoU",
                                        "promote.improve={tg.mIoU: 0.0}", "promote.keep={}"])
    assert ok.train.tasks == ["tg"]
    load_params(PARAMS, ["train.tasks=[tg]"])  # training on fewer tasks than are annotated is fine
    with pytest.raises(ValueError, match=r"sft.tasks has \['qa'\]"):
        load_params(PARAMS, ["build_samples.annotations={tg: a.json, gqa: b.json, tracking: c.json}",
                             "train.tasks=[tg]", "sft.enabled=true", "evaluate.general_task=tg",
                             "evaluate.general_metric=mIoU", "promote.keep={}"])


def test_the_general_ability_tolerance_is_one_value():
    """evaluate's general-ability check and promote's gate keep the same metric with the same tolerance
    (evaluate.general_tolerance), judged by one rule (stages.bootstrap.drop_excluded)."""
    from stages.bootstrap import drop_excluded

    p = load_params(PARAMS)
    assert p.promote.keep["qa.accuracy"] == p.evaluate.general_tolerance == 0.10
    assert load_params(PARAMS, ["evaluate.general_tolerance=0.05"]).promote.keep["qa.accuracy"] == 0.05
    load_params(PARAMS, ["promote.keep={qa.accuracy: 0.10}"])  # the same value named twice is fine
    with pytest.raises(ValueError, match=r"promote.keep\['qa.accuracy'\]=0.05 differs from "
                                         r"evaluate.general_tolerance=0.1"):
        load_params(PARAMS, ["promote.keep={qa.accuracy: 0.05}"])
    assert drop_excluded({"lo": -0.10}, 0.10) and not drop_excluded({"lo": -0.1000001}, 0.10)
