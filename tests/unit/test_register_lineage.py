"""Register's pure parts: DVC hashes from dvc.lock, lineage tags, what the logged model ships, the model card,
and a clear error for an unreachable tracking server."""
import json

import pytest
import yaml

from infra.devstack import free_port
from stages import model_card, register
from stages.params import MlflowParams, RegisterParams
from stages.mlflow_log import TrackingUnavailable

EVAL = {"candidate": {"model": "models/run", "model_sha256": "m" * 64,
                      "metrics": {"tg": {"mIoU": 0.25, "R@0.5": 0.2, "count": 4}, "qa": {"accuracy": 0.5, "count": 4}}},
        "baseline": {"model": "base", "metrics": {"tg": {"mIoU": 0.05, "R@0.5": 0.0, "count": 4},
                                                  "qa": {"accuracy": 0.75, "count": 4}}},
        "samples": 8, "samples_per_task": {"qa": 4, "tg": 4}, "inputs_sha256": "i" * 64,
        "general": {"task": "qa", "metric": "accuracy", "candidate": 0.5, "baseline": 0.75, "tolerance": 0.02,
                    "lo": -0.5, "hi": 0.0, "level": 0.95, "kept": False},
        "intervals": {"tg": {"mIoU": {"delta": 0.2, "lo": 0.1, "hi": 0.3, "level": 0.95, "resamples": 2000, "n": 4,
                                      "paired": True}},
                      "qa": {"accuracy": {"delta": -0.25, "lo": -0.5, "hi": 0.0, "level": 0.95, "resamples": 2000,
                                          "n": 4, "paired": True}}},
        "interval": {"method": "paired bootstrap, percentile", "level": 0.95, "resamples": 2000, "seed": 0}}
SUMMARY = {"mlflow_run_id": "r" * 32, "mlflow_experiment_id": "1", "base_model": "base", "steps": 3, "samples": 8}


def test_dvc_hashes_come_from_the_lock_and_missing_outs_say_so(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "build_samples": {"outs": [{"path": "data/samples", "hash": "md5", "md5": "abc.dir"}]},
        "train": {"outs": [{"path": "models/run", "md5": "zzz.dir"}]}}}))
    assert register.dvc_hashes(lock, ["data/samples", "data/frames"]) == {"data/samples": "abc.dir",
                                                                         "data/frames": "missing"}
    assert register.dvc_hashes(tmp_path / "none.lock", ["data/samples"]) == {"data/samples": "missing"}


def test_lineage_tags_carry_run_data_params_and_the_headline_metrics_only():
    tags = register.lineage_tags(SUMMARY, EVAL, commit="c" * 40, data_hashes={"data/samples": "abc.dir"},
                                 params_sha256="p" * 64)
    assert tags["train_run_id"] == "r" * 32 and tags["git_commit"] == "c" * 40 and tags["params_sha256"] == "p" * 64
    assert tags["dvc.data/samples"] == "abc.dir" and tags["eval_inputs_sha256"] == "i" * 64
    assert tags["metric.tg.mIoU"] == "0.25" and tags["metric.qa.accuracy"] == "0.5"
    assert json.loads(tags["intervals"]) == {"tg.mIoU": [0.2, 0.1, 0.3], "qa.accuracy": [-0.25, -0.5, 0.0],
                                             **EVAL["interval"]}
    assert "eval_samples_sha256" not in tags  # no per-sample rows given
    assert sorted(tags) == sorted(["train_run_id", "base_model", "git_commit", "params_sha256", "eval_inputs_sha256",
                                   "model_sha256", "intervals", "dvc.data/samples", "metric.tg.mIoU",
                                   "metric.qa.accuracy"])  # the other metrics: training run and model card
    assert all(isinstance(v, str) for v in tags.values())


def test_intervals_tag_holds_the_headline_metrics_of_every_task():
    from stages import bootstrap
    from tests.eval_tables import base_values, samples, shifted

    base = base_values(n=64)
    table = samples(shifted(base, tg=0.1), base)
    ivs = {t: bootstrap.paired_interval(t, [r["candidate"] for r in rows.values()],
                                        [r["baseline"] for r in rows.values()]) for t, rows in table["tasks"].items()}
    text = register.intervals_tag({**EVAL, "intervals": ivs})
    assert set(json.loads(text)) - set(EVAL["interval"]) == {"tg.mIoU", "gqa.evidence_mIoU", "tracking.AO",
                                                             "qa.accuracy"}
    assert len(text) < 400


def test_logged_model_folder_ships_model_prompts_and_card_but_not_trainer_state(tmp_path):
    src = tmp_path / "run"
    (src / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (src / "checkpoints" / "checkpoint-2" / "optimizer.pt").write_bytes(b"x")
    for f in ("model.safetensors", "config.json", "tokenizer.json", "training_args.bin", "train_summary.json"):
        (src / f).write_text(f)
    prompts = register.prompt_files(None)
    (tmp_path / "eval_samples.json").write_text("{}")
    dest = register.stage_model_dir(str(src), prompts, "# card", tmp_path / "out", tmp_path / "eval_samples.json")
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["MODEL_CARD.md", "config.json", "eval_samples.json", "model.safetensors", "prompts",
                     "tokenizer.json", "train_summary.json"]
    assert sorted(p.name for p in (dest / "prompts").iterdir()) == sorted(p.name for p in prompts)
    assert {"tg.txt", "gqa.txt", "tracking.txt", "qa.txt"} <= {p.name for p in prompts}


def test_prompt_dir_without_templates_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        register.prompt_files(str(tmp_path))


def test_model_card_has_base_data_params_metrics_and_lineage():
    tags = register.lineage_tags(SUMMARY, EVAL, commit="c" * 40, data_hashes={"data/samples": "abc.dir"},
                                 params_sha256="p" * 64)
    card = model_card.render("videorft-tiny", SUMMARY, EVAL, tags, {"beta": 0.04, "learning_rate": 1e-6},
                             ["tg.txt", "qa.txt"])
    assert card.startswith("# videorft-tiny")
    assert "base model: `base`" in card and "DVC `data/samples`: `abc.dir`" in card
    assert "| beta | 0.04 |" in card and "| tg | mIoU | 0.2500 | 0.0500 | 0.2000 | +0.2000 [+0.1000, +0.3000] |" in card
    assert "| tg | R@0.5 | 0.2000 | 0.0000 | 0.2000 | n/a |" in card
    assert "| qa | accuracy | 0.5000 | 0.7500 | -0.2500 | -0.2500 [-0.5000, +0.0000] |" in card
    assert "95% percentile intervals of candidate - base from a paired bootstrap" in card and "2000 resamples" in card
    assert "(interval [-0.5000, +0.0000]), tolerance 0.02: NOT kept" in card
    assert f"| git_commit | `{'c' * 40}` |" in card and "`prompts/tg.txt`" in card
    assert "metric.tg.mIoU" not in card and "| intervals |" not in card  # in the table, not repeated as lineage
    assert model_card.description(card) == card  # it fits: the version's description is the whole card


def test_model_card_says_what_the_gains_rest_on():
    checked = {**EVAL, "blind": {"metrics": {"tg": {"mIoU": 0.3}}},
               "video_swap": {"candidate": {"tg": {"delta": 0.25, "lo": 0.1, "hi": 0.4,
                                                   "verdict": "answers use the video"},
                                            "qa": {"delta": 0.0, "lo": 0.0, "hi": 0.0,
                                                   "verdict": "NO sign the answers use the video"}}},
               "reward_probe": {"tg": {"delta": 0.04, "lo": 0.01, "hi": 0.07, "verdict": "rose"}}}
    tags = register.lineage_tags(SUMMARY, checked, commit="c" * 40, data_hashes={}, params_sha256="p" * 64)
    card = model_card.render("videorft-tiny", SUMMARY, checked, tags, {}, ["tg.txt"])
    assert "## What the gains rest on" in card
    assert ("| tg | mIoU | 0.3000 | +0.2500 [+0.1000, +0.4000]: answers use the video | "
            "+0.0400 [+0.0100, +0.0700]: rose |") in card
    assert "| qa | accuracy | n/a | +0.0000 [+0.0000, +0.0000]: NO sign the answers use the video | n/a |" in card
    plain = model_card.render("videorft-tiny", SUMMARY, EVAL, tags, {}, ["tg.txt"])
    assert "## What the gains rest on" not in plain  # nothing checked: no section


def test_a_long_card_becomes_a_description_that_fits_the_registry():
    tags = register.lineage_tags(SUMMARY, EVAL, commit="c" * 40, data_hashes={"data/samples": "abc.dir"},
                                 params_sha256="p" * 64)
    params = {f"knob_{i}": "x" * 40 for i in range(100)}  # a long training-parameter table
    card = model_card.render("videorft-tiny", SUMMARY, EVAL, tags, params, ["tg.txt"])
    assert len(card) > model_card.DESCRIPTION_MAX
    text = model_card.description(card)
    assert len(text) <= model_card.DESCRIPTION_MAX and "knob_" not in text
    assert "## Training parameters\n\nLeft out here: the whole card is `MODEL_CARD.md`" in text
    assert "| tg | mIoU | 0.2500 |" in text and f"| git_commit | `{'c' * 40}` |" in text  # the rest stays
    cut = model_card.description(card, limit=600)  # a last resort: cut at a line, saying so
    assert len(cut) <= 600 and cut.startswith("# videorft-tiny") and cut.endswith("MODEL_CARD.md` in the model's files)\n")


def test_unreachable_tracking_server_is_named(monkeypatch, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingUnavailable, match=f"MLflow tracking server {uri} is unreachable"):
        register.run(RegisterParams(out=str(tmp_path / "r.json")), MlflowParams(), str(tmp_path),
                     str(tmp_path / "eval.json"))
