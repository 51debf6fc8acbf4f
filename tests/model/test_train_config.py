"""The run's configuration is what we say it is: the paper's settings by default, every TRL default we rely on
recorded (and checked against the installed TRL, so an upgrade that moves one fails here), the recipe valid,
the DeepSpeed/accelerate configs well-formed, the multi-process launch command right."""
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]


def trl_field_defaults() -> dict:
    from trl import GRPOConfig

    out = {}
    for f in dataclasses.fields(GRPOConfig):
        value = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[f.name] = getattr(value, "value", value)  # enums -> their string
    return out


def test_pinned_trl_defaults_are_the_installed_ones_and_documented():
    from stages.train import TRL_PINNED

    defaults = trl_field_defaults()
    moved = {k: (d, defaults[k]) for k, (_v, d, _w) in TRL_PINNED.items() if defaults[k] != d}
    assert not moved, f"TRL defaults moved (recorded, installed): {moved}"
    doc = (ROOT / "docs" / "training.md").read_text()
    assert [k for k in TRL_PINNED if f"`{k}`" not in doc] == []


def test_train_params_state_trl_defaults_correctly():
    """Every 'TRL default X' in a TrainParams description is GRPOConfig's field default."""
    from stages.params import TrainParams

    defaults = trl_field_defaults()
    defaults["gradient_checkpointing"] = {True: "on", False: "off"}[defaults["gradient_checkpointing"]]
    checked = 0
    for name, field in TrainParams.model_fields.items():
        m = re.search(r"TRL default ([\w.+-]+?)\.?(?:\s|$)", field.description or "")
        if not m:
            continue
        want = defaults[name]
        said = m.group(1)
        assert said == str(want) or (isinstance(want, float) and float(said) == want), (name, said, want)
        checked += 1
    assert checked >= 12


def test_defaults_are_the_papers_settings(tmp_path):
    from stages.params import TrainParams
    from stages.train import grpo_config

    args = grpo_config(TrainParams(), str(tmp_path), use_cpu=True)
    assert (args.num_generations, args.beta, args.temperature, args.learning_rate, args.loss_type,
            args.num_train_epochs, args.max_completion_length) == (8, 0.04, 1.0, 1e-6, "grpo", 1.0, 1024)
    assert args.lr_scheduler_type.value == "constant" and args.num_iterations == 1
    assert args.scale_rewards == "group" and not args.use_bias_correction_kl
    assert args.per_device_train_batch_size == 8 and args.steps_per_generation == 1  # 1 prompt x G per GPU
    assert TrainParams().bf16 is True  # applied on GPU only (grpo_config(use_cpu=True) turns it off)


def test_recipe_is_valid_and_pins_the_paper(tmp_path):
    import subprocess
    import sys

    from stages.params import load_params

    recipe = ROOT / "recipes" / "videochat-r1-7b.yaml"
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from apply import for_dvc, overrides
    finally:
        sys.path.pop(0)
    items = overrides(recipe)
    p = load_params(ROOT / "params.yaml", items)
    t = p.train
    assert (t.num_generations, t.beta, t.temperature, t.learning_rate, t.loss_type, t.num_train_epochs,
            t.max_completion_length, t.max_steps) == (8, 0.04, 1.0, 1e-6, "grpo", 1.0, 1024, -1)
    assert t.bf16 and t.gradient_checkpointing and t.num_processes == 8
    # the demo's own options (params.yaml) stay out of the paper's recipe
    assert (t.guide_lost_groups, t.weight_ema, t.box_credit, t.validation.per_task, t.lr_scheduler_type) == (
        False, 0.0, False, 0, "constant")
    assert p.build_samples.weights == {} and p.build_samples.eval_fraction == 0.25
    assert p.model.name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (p.extract_frames.fps, p.extract_frames.max_frames, p.extract_frames.total_pixels) == (2.0, 768,
                                                                                                   3584 * 28 * 28)
    assert p.extract_frames.budget == "qwen_vl_utils"  # fetch_video's arithmetic (tests/unit/test_budget_qwen.py)
    accel = yaml.safe_load((ROOT / t.accelerate_config).read_text())
    assert accel["distributed_type"] == "DEEPSPEED" and accel["num_processes"] == t.num_processes
    ds = json.loads((ROOT / accel["deepspeed_config"]["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    # the CLI prints `-S` pairs that load back to the same params (what `dvc exp run` receives); a key params.yaml
    # does not list gets Hydra's `++`, which DVC needs to add it (here: a params.yaml without extract_frames.budget)
    lean = tmp_path / "params.yaml"
    lean.write_text("".join(line for line in (ROOT / "params.yaml").read_text().splitlines(keepends=True)
                            if not line.startswith("  budget:")))
    for params_file, budget in ((ROOT / "params.yaml", 'extract_frames.budget="qwen_vl_utils"'),
                                (lean, '++extract_frames.budget="qwen_vl_utils"')):
        out = subprocess.run([sys.executable, str(ROOT / "recipes" / "apply.py"), str(recipe), "--params",
                              str(params_file)], capture_output=True, text=True, check=True).stdout.splitlines()
        assert out[0::2] == ["-S"] * len(items) and out[1::2] == for_dvc(items, params_file)
        assert [o.removeprefix("++") for o in out[1::2]] == items and budget in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  num_generation: 8\n")  # typo
    with pytest.raises(Exception, match="num_generation"):
        load_params(ROOT / "params.yaml", overrides(bad))


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "infra" / "accelerate").glob("*.yaml")))
def test_accelerate_configs_load_and_point_at_real_files(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "infra" / "accelerate" / name
    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.num_processes % cfg.num_machines == 0
    if cfg.distributed_type.value == "DEEPSPEED":
        ds_file = ROOT / cfg.deepspeed_config["deepspeed_config_file"]
        assert ds_file.exists(), ds_file
        assert cfg.deepspeed_config["zero3_init_flag"] == ('"stage": 3' in ds_file.read_text())


@pytest.mark.parametrize("name, stage, offload", [("zero2", 2, False), ("zero3", 3, False),
                                                  ("zero3_offload", 3, True)])
def test_deepspeed_configs_leave_batch_and_precision_to_the_trainer(name, stage, offload):
    ds = json.loads((ROOT / "infra" / "deepspeed" / f"{name}.json").read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload and ("offload_param" in zero) == offload
    # batch sizes, accumulation, clipping and precision come from GRPOConfig ("auto"), never fixed twice
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds[key] == "auto", key
    assert ds["bf16"]["enabled"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"], "the final save must hold full weights"


def test_launch_commands():
    import sys

    from stages.params import TrainParams
    from stages.rl.launch import launch_command

    cmd = launch_command(TrainParams(num_processes=2, launcher="torchrun"), port=1234)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and cmd[-2:] == ["-m", "stages.train"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2" and "--master_port" in cmd
    cmd = launch_command(TrainParams(num_processes=8, launcher="accelerate",
                                     accelerate_config="infra/accelerate/zero3_offload.yaml"), port=1234)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == "infra/accelerate/zero3_offload.yaml"
    assert cmd[cmd.index("--num_processes") + 1] == "8" and cmd[-2:] == ["-m", "stages.train"]


def test_checkpoint_fingerprint_tracks_what_changes_the_trajectory(tiny_model_dir, tmp_path):
    from stages.params import ModelParams, TrainParams
    from stages.rl.checkpoints import fingerprint, is_complete, last_complete

    samples = tmp_path / "train.jsonl"
    samples.write_text('{"id": 1}\n')
    model = ModelParams(name_or_path=tiny_model_dir).model_dump()
    base = fingerprint(TrainParams().model_dump(), model, str(samples), True)
    same = [TrainParams(out_dir="x", save_steps=7, logging_steps=3, keep_checkpoints=True).model_dump()]
    assert all(fingerprint(t, model, str(samples), True) == base for t in same)
    assert fingerprint(TrainParams(beta=0.02).model_dump(), model, str(samples), True) != base
    assert fingerprint(TrainParams(num_processes=2).model_dump(), model, str(samples), True) != base
    assert fingerprint(TrainParams().model_dump(), model, str(samples), False) != base
    samples.write_text('{"id": 2}\n')
    assert fingerprint(TrainParams().model_dump(), model, str(samples), True) != base
    # only complete checkpoints count; the highest complete one wins
    for step, files in ((2, ["model.safetensors", "optimizer.pt", "trainer_state.json"]),
                        (4, ["model.safetensors", "optimizer.pt"])):  # 4: killed while saving
        d = tmp_path / "run" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("x")
    assert not is_complete(tmp_path / "run" / "checkpoint-4")
    assert last_complete(tmp_path / "run") == tmp_path / "run" / "checkpoint-2"
    assert last_complete(tmp_path / "missing") is None
    # with train.weight_ema, the average (written after trainer_state.json) must be there too
    assert last_complete(tmp_path / "run", ("ema.safetensors",)) is None
    (tmp_path / "run" / "checkpoint-2" / "ema.safetensors").write_text("x")
    assert last_complete(tmp_path / "run", ("ema.safetensors",)) == tmp_path / "run" / "checkpoint-2"
