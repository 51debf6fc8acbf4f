"""The shipped base model: its recipe is deterministic, and the committed checkpoint is what the recipe says.

The full recipe takes about an hour of CPU (docs/base-model.md); here a short run of the same code twice on the
same data must give the same bytes, and the shipped checkpoint must load, answer in the prompt's layout and match
the sha256 its pretrain.json records.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BASE = ROOT / "pretrained/tiny-qwen2_5_vl"
SHORT = [
    "synthesize.num_videos=16", "synthesize.num_tracking_sequences=8", "build_samples.eval_fraction=0.25",
    "sft.epochs=2", "sft.max_samples_per_task=6", "sft.batch_size=4",
    "tiny_model.hidden_size=64", "tiny_model.intermediate_size=128", "tiny_model.num_hidden_layers=2",
    "tiny_model.vision_hidden_size=32",
]


def test_short_pretraining_run_is_deterministic(tmp_path, monkeypatch):
    from recipes import pretrain_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    first = pretrain_base.main(["--workdir", str(work), "--out", str(tmp_path / "a")] + sum((["-S", s] for s in SHORT), []))
    second = pretrain_base.main(["--workdir", str(work), "--out", str(tmp_path / "b"), "--reuse-data"]
                                + sum((["-S", s] for s in SHORT), []))
    assert first["steps"] == second["steps"] > 0
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["curve"][-1]["held_out"] == second["curve"][-1]["held_out"]


def test_shipped_base_is_the_recipes_output():
    from recipes.pretrain_base import sha256

    record = json.loads((BASE / "pretrain.json").read_text())
    assert record["weights_sha256"] == sha256(BASE / "model.safetensors")
    assert record["recipe"] == "recipes/pretrain-base.yaml" and not record["overrides"]
    final = record["curve"][-1]
    assert final["epoch"] == record["params"]["sft"]["epochs"]
    # it answers every task in the prompt's layout (held-out pretraining videos)
    assert all(m["parse_rate"] >= 0.9 for m in final["held_out"].values()), final["held_out"]
