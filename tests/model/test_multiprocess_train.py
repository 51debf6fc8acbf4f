"""The train stage on two processes: `python -m stages.train` with train.num_processes = 2 re-launches itself
(torchrun; gloo on CPU), the ranks train one model together, rank 0 alone logs to MLflow and saves. Where
DeepSpeed is installed (the `test` extra), ZeRO-2 and ZeRO-3 runs of the same seed take the same steps as DDP."""
import json
import subprocess
import sys

import pytest
from test_resume import metric_series, workspace

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
COMPARED = ("loss", "grad_norm", "kl", "reward", "entropy", "completions/mean_length")


@pytest.fixture(scope="module")
def ddp_run(answering_model, frame_files, tmp_path_factory):
    return run_stage(tmp_path_factory.mktemp("ddp"), answering_model, frame_files)


def run_stage(root, model_dir, frame_files, **train):
    ws, env = workspace(root / "ws", model_dir, frame_files, num_processes=2, max_steps=2, **train)
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((ws / "run" / "train_summary.json").read_text())
    return ws, proc, summary


def test_two_processes_train_one_model_and_log_once(ddp_run):
    from mlflow import MlflowClient

    ws, proc, summary = ddp_run
    assert "torch.distributed.run" in proc.stdout and "--nproc_per_node 2" in proc.stdout
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert proc.stdout.count("train: 2 steps") == 1  # rank 0 reports; rank 1 stays quiet
    client = MlflowClient(tracking_uri=f"sqlite:///{ws}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
    series = metric_series(ws, summary["mlflow_run_id"])
    assert set(series["loss"]) == {1, 2} and series["grad_norm"][2] > 0
    assert (ws / "run" / "model.safetensors").exists() and (ws / "run" / "processor_config.json").exists()


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_zero_takes_the_same_steps_as_ddp(zero, ddp_run, answering_model, frame_files, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed (the `test` and `gpu` extras) is not installed")
    from pathlib import Path

    from transformers import AutoModelForImageTextToText

    root = Path(__file__).resolve().parents[2]
    ws, _, summary = run_stage(tmp_path, answering_model, frame_files,
                               deepspeed=str(root / "infra" / "deepspeed" / f"{zero}.json"))
    ddp_ws, _, ddp_summary = ddp_run
    got, want = metric_series(ws, summary["mlflow_run_id"]), metric_series(ddp_ws, ddp_summary["mlflow_run_id"])
    for name in COMPARED:
        for step in (1, 2):
            assert got[name][step] == pytest.approx(want[name][step], rel=1e-4, abs=1e-6), (name, step)
    # the saved model loads like any checkpoint (ZeRO-3 gathers the partitions into full weights on save) and
    # holds the weights DDP trained (key spelling in the file may differ; from_pretrained maps both)
    model, info = AutoModelForImageTextToText.from_pretrained(ws / "run", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ddp = dict(AutoModelForImageTextToText.from_pretrained(ddp_ws / "run").named_parameters())
    assert all((p - ddp[n]).abs().max() < 1e-5 for n, p in model.named_parameters())
