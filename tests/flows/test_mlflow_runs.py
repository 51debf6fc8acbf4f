"""What a user of the MLflow UI sees of the project's runs, with a real MLflow store (SQLite in a tmp dir): the
experiments open in the model-training view (experiment kind tag); training runs are named after what ran; a run
whose process was SIGKILLed is marked KILLED by the next stage that starts, and a resumed training run finishes."""
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from flows.mlflow_runs import FlowRuns
from stages import lineage, mlflow_log
from stages.params import MlflowParams, ModelParams, TrainParams
from stages.train import mlflow_run, run_name


ROOT = Path(__file__).resolve().parents[2]

# A stage process that starts its run (`start_stage_run`, or training's own `mlflow_run`) and waits to be killed.
STARTS_AND_WAITS = """
import sys, time
from pathlib import Path
from stages.params import MlflowParams
from stages.mlflow_log import setup
uri, experiment, how, run_file = sys.argv[1:5]
mp = MlflowParams(tracking_uri=uri, experiment=experiment)
if how == "stage":
    from stages.lineage import start_stage_run
    setup(mp)
    run_cm = start_stage_run("ingest", run_name="ingest-killed")
else:
    from stages.train import mlflow_run
    run_cm = mlflow_run(True, mp, Path(run_file), False, "train-killed")
with run_cm as run:
    print(run.info.run_id, flush=True)
    time.sleep(600)
"""


def _store(tmp_path, monkeypatch) -> str:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_experiments_are_tagged_as_model_training_once_and_a_chosen_kind_stays(tmp_path, monkeypatch):
    uri = _store(tmp_path, monkeypatch)
    client = MlflowClient(uri)
    kind = mlflow_log.EXPERIMENT_KIND_TAG

    mlflow_log.setup(MlflowParams(tracking_uri=uri, experiment="fresh"))  # created by the stage
    assert client.get_experiment_by_name("fresh").tags[kind] == "custom_model_development"
    old = client.create_experiment("old")  # made before the tag existed
    mlflow_log.setup(MlflowParams(tracking_uri=uri, experiment="old"))
    mlflow_log.setup(MlflowParams(tracking_uri=uri, experiment="old"))  # idempotent
    assert client.get_experiment(old).tags[kind] == "custom_model_development"

    FlowRuns(uri, "flow-made", flow_run_id="f", commit="c")  # created by a flow
    assert client.get_experiment_by_name("flow-made").tags[kind] == "custom_model_development"
    chosen = client.create_experiment("chosen", tags={kind: "genai_development"})  # a user's choice in the UI
    FlowRuns(uri, "chosen", flow_run_id="f", commit="c")
    mlflow_log.setup(MlflowParams(tracking_uri=uri, experiment="chosen"))
    assert client.get_experiment(chosen).tags[kind] == "genai_development"


def test_training_runs_are_named_after_loss_tasks_model_and_fingerprint(tmp_path, monkeypatch):
    uri = _store(tmp_path, monkeypatch)
    name = run_name(TrainParams(tasks=["tg", "qa"], loss_type="dapo"), ModelParams(family="qwen3_vl"), "abcdef0123")
    assert name == "train-dapo-tg+qa-qwen3_vl-abcdef"
    mp, run_file = MlflowParams(tracking_uri=uri, experiment="names"), tmp_path / "mlflow_run.json"
    with mlflow_run(True, mp, run_file, False, name) as active:
        first = active.info.run_id
    with mlflow_run(True, mp, run_file, True, name) as active:  # resumed from a checkpoint: the same run
        assert active.info.run_id == first
    run = MlflowClient(uri).get_run(first)
    assert run.info.run_name == name and run.info.status == "FINISHED"
    assert mlflow.active_run() is None


def test_runs_of_sigkilled_processes_are_marked_killed_and_a_resumed_training_run_finishes(tmp_path, monkeypatch):
    uri = _store(tmp_path, monkeypatch)
    mp, run_file = MlflowParams(tracking_uri=uri, experiment="killed"), tmp_path / "ckpt" / "mlflow_run.json"
    client = MlflowClient(uri)
    exp_id = mlflow_log.ensure_experiment(client, "killed")  # the database exists before two processes open it
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(ROOT)}
    procs = {how: subprocess.Popen([sys.executable, "-c", STARTS_AND_WAITS, uri, "killed", how, str(run_file)],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for how in ("stage", "train")}
    try:
        ids = {how: proc.stdout.readline().strip() for how, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert all(ids.values()), ids
    dead = str(procs["stage"].pid)
    assert client.get_run(ids["stage"]).data.tags[lineage.TAG_PID] == dead
    assert {client.get_run(i).info.status for i in ids.values()} == {"RUNNING"}  # what SIGKILL leaves
    host = socket.gethostname()
    untouched = [client.create_run(exp_id, run_name=n, tags=t).info.run_id for n, t in (
        ("other-host", {lineage.TAG_HOST: "elsewhere", lineage.TAG_PID: dead}),
        ("alive", {lineage.TAG_HOST: host, lineage.TAG_PID: str(os.getpid())}),
        ("no-owner", {}))]

    # training starts again and resumes its run (same checkpoint): its own run goes on, the other is KILLED
    with mlflow_run(True, mp, run_file, True, "train-killed") as active:
        assert active.info.run_id == ids["train"]
        run = client.get_run(ids["train"])
        assert run.info.status == "RUNNING" and run.data.tags[lineage.TAG_PID] == str(os.getpid())
        assert client.get_run(ids["stage"]).info.status == "KILLED"
    assert client.get_run(ids["train"]).info.status == "FINISHED"

    # any stage starting its run, and a flow starting its parent run, do the same
    for start in ("stage", "flow"):
        orphan = client.create_run(exp_id, run_name="orphan", tags={lineage.TAG_HOST: host, lineage.TAG_PID: dead})
        if start == "stage":
            with lineage.start_stage_run("evaluate", run_name="evaluate-now") as run:
                assert run.data.tags[lineage.TAG_PID] == str(os.getpid())
        else:
            FlowRuns(uri, "killed", flow_run_id="f", commit="c").start_parent("retrain-now", {})
        assert client.get_run(orphan.info.run_id).info.status == "KILLED", start
    assert [client.get_run(i).info.status for i in untouched] == ["RUNNING"] * 3


@pytest.mark.slow  # two one-step trainings: about 50 s here
def test_training_run_has_its_dataset_upstream_params_and_system_metrics(tiny_model_dir, frame_files, tmp_path):
    """`python -m stages.train` (one step of the tiny model): the samples file is the run's training dataset with
    the DVC hash of its out, extract_frames / build_samples settings are params, and system/* metrics are sampled
    (mlflow.log_system_metrics, here every 0.5 s); with the knob off there are none."""
    import json

    import yaml

    def train(root, system):
        (root / "samples").mkdir(parents=True)
        rows = [{"id": f"tg{i}", "task": "tg", "prompt": f"When does event {i} happen?", "frames": frame_files[i % 4],
                 "fps": 2.0, "solution": {"timestamps": [1.0, 4.0]}} for i in range(2)]
        (root / "samples" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"build_samples": {"outs": [
            {"path": "samples", "md5": "e" * 32 + ".dir"}]}}}))
        (root / "params.yaml").write_text(yaml.safe_dump({
            "build_samples": {"out_dir": "samples", "think": False}, "extract_frames": {"max_frames": 8},
            "model": {"name_or_path": tiny_model_dir, "family": "qwen2_5_vl"},
            "train": {"out_dir": "run", "checkpoint_dir": "ckpt", "tasks": ["tg"], "num_generations": 2,
                      "per_device_train_batch_size": 2, "max_steps": 1, "max_completion_length": 4, "bf16": False},
            "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "inputs",
                       "log_system_metrics": system, "system_metrics_interval_s": 0.5}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, capture_output=True, text=True,
                              timeout=600, env={**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_id = json.loads((root / "run" / "train_summary.json").read_text())["mlflow_run_id"]
        return MlflowClient(f"sqlite:///{root}/mlflow.db").get_run(run_id)

    run = train(tmp_path / "on", True)
    (ds,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in ds.tags} == {"mlflow.data.context": "training", "dvc.samples": "e" * 32 + ".dir"}
    assert ds.dataset.name == "samples/train.jsonl" and json.loads(ds.dataset.profile)["rows_per_task"] == {"tg": 2}
    assert run.data.params["extract_frames.max_frames"] == "8" and run.data.params["build_samples.think"] == "False"
    assert not any(k.startswith("evaluate.") for k in run.data.params)  # the evaluation run's
    assert any(k.startswith("system/cpu") for k in run.data.metrics), sorted(run.data.metrics)
    assert not any(k.startswith("system/") for k in train(tmp_path / "off", False).data.metrics)
