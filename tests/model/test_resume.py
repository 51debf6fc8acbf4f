"""Kill and resume: `python -m stages.train` killed (SIGKILL) after its step-2 checkpoint resumes from it on the
next run and takes exactly the steps an uninterrupted run takes — same data, same rollouts, same weights.

The base model is the tiny model rewired into a prompt-blind sampler of answer-shaped text, so the real task
rewards vary and every step moves the weights (a random tiny model scores 0 everywhere: nothing would train).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
ROOT = Path(__file__).resolve().parents[2]
STEPS, SAVE = 4, 2


def workspace(root: Path, model_dir: str, frame_files: list[str], **train) -> tuple[Path, dict]:
    root.mkdir(parents=True)
    rows = [{"id": f"tg{i}", "task": "tg", "prompt": f"When does event {i} happen?", "frames": frame_files[i % 4],
             "fps": 2.0, "solution": {"timestamps": [1.0, 4.0 + i]}} for i in range(6)]
    rows += [{"id": f"qa{i}", "task": "qa", "prompt": f"Which option {i}?", "frames": frame_files[(i + 1) % 4],
              "fps": 2.0, "solution": {"answer": "ABC"[i % 3]}} for i in range(6)]
    (root / "samples").mkdir()
    (root / "samples" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {
        "build_samples": {"out_dir": str(root / "samples"), "think": False},
        "model": {"name_or_path": model_dir, "family": "qwen2_5_vl"},
        "train": {"out_dir": str(root / "run"), "checkpoint_dir": str(root / "ckpt"), "tasks": ["tg", "qa"],
                  "num_generations": 4, "per_device_train_batch_size": 8, "max_steps": STEPS, "save_steps": SAVE,
                  "max_completion_length": 16, "learning_rate": 1e-3, "bf16": False, "seed": 3, **train},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "resume"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):  # the stage's own tracking store (params)
        env.pop(name, None)
    return root, env


def train(root: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def metric_series(root: Path, run_id: str) -> dict[str, dict[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    names = client.get_run(run_id).data.metrics
    return {n: {m.step: m.value for m in client.get_metric_history(run_id, n)} for n in names}


def mlflow_run_info(root: Path, run_id: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db").get_run(run_id).info


def test_killed_run_resumes_with_the_same_next_steps(answering_model, frame_files, tmp_path):
    from safetensors.torch import load_file

    # uninterrupted reference
    ref, env = workspace(tmp_path / "ref", answering_model, frame_files)
    train(ref, env)
    ref_summary = json.loads((ref / "run" / "train_summary.json").read_text())
    assert ref_summary["steps"] == STEPS and ref_summary["resumed_from_step"] is None
    assert not any((ref / "ckpt").iterdir()), "a finished run removes its checkpoints"

    # the same run, killed once its step-2 checkpoint is complete
    ws, env = workspace(tmp_path / "ws", answering_model, frame_files)
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while not list((ws / "ckpt").glob(f"*/checkpoint-{SAVE}/trainer_state.json")):
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpts = sorted(p.name for p in (ws / "ckpt").glob("*/checkpoint-*"))
    assert ckpts == [f"checkpoint-{SAVE}"], ckpts
    assert not (ws / "run" / "train_summary.json").exists()
    killed_run = json.loads(next((ws / "ckpt").glob("*/mlflow_run.json")).read_text())["run_id"]
    assert mlflow_run_info(ws, killed_run).status == "RUNNING"  # what SIGKILL leaves

    out = train(ws, env)  # the stage finds the matching checkpoint by itself
    assert f"resuming from {ws / 'ckpt'}" in out.stdout
    summary = json.loads((ws / "run" / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == SAVE and summary["steps"] == STEPS
    assert summary["fingerprint"] == ref_summary["fingerprint"]
    info = mlflow_run_info(ws, summary["mlflow_run_id"])  # the same run, resumed and ended normally
    assert summary["mlflow_run_id"] == killed_run and info.status == "FINISHED"
    assert info.run_name == f"train-grpo-tg+qa-qwen2_5_vl-{summary['fingerprint'][:6]}"

    # steps 3 and 4 match the uninterrupted run: rewards per task (same prompts), loss, KL, gradient norm
    got = metric_series(ws, summary["mlflow_run_id"])  # one MLflow run across the kill
    want = metric_series(ref, ref_summary["mlflow_run_id"])
    compared = 0
    # wall-clock figures, and HF's end-of-session mean loss (over the steps THIS process ran), are not trajectory
    timing = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_seconds",
              "train_loss")
    for name, series in ((n, s) for n, s in want.items() if n not in timing):
        for step in (3, 4):
            if step in series:  # a step without a qa prompt logs no qa curve point, in both runs
                assert got[name][step] == pytest.approx(series[step], rel=1e-5, abs=1e-7), (name, step)
                compared += 1
    assert set(got["loss"]) == {1, 2, 3, 4} and compared > 40
    assert any(k.startswith("rewards/tg_") for k in want) and any(k.startswith("rewards/qa_") for k in want)
    assert want["grad_norm"][3] > 0, "the steps must actually train"
    a, b = load_file(ref / "run" / "model.safetensors"), load_file(ws / "run" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)
    base = load_file(Path(answering_model) / "model.safetensors")
    assert any((a[k] - base[k]).abs().max() > 1e-4 for k in a), "training changed the weights"
