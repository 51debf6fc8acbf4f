"""The real pipeline (tiny params) through the retrain flow on the real local stack: Prefect server on PostgreSQL,
MLflow on PostgreSQL with S3 artifacts, the DVC remote on the S3 server, and a process worker on the `gpu` pool in
its own copy of the repository standing in for the GPU machine.

A first retrain whose evaluate stage breaks leaves the registry and the remote consistent (nothing registered for
the unevaluated model; every output made so far in the remote, complete); the re-run completes without training
again, with one MLflow parent run and every stage nested under it. The train stage logs its curves into the nested
run its flow run made for it, on the other machine.
"""
import json
import subprocess
import sys

import pytest
import yaml
from tests.flows.machines import Worker, assert_remote_consistent, deploy, make_workspace, sh, stack_env

pytestmark = pytest.mark.slow
STAGES = ["synthesize", "ingest", "extract_frames", "build_samples", "tiny_model", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def machines(stack, tmp_path_factory):
    cpu, gpu = make_workspace(tmp_path_factory.mktemp("pcpu")), make_workspace(tmp_path_factory.mktemp("pgpu"))
    deploy(cpu, stack_env(stack, cpu))
    worker = Worker("gpu", gpu, stack_env(stack, gpu)).start()
    try:
        yield cpu, gpu
    finally:
        worker.stop()


def retrain(stack, ws):
    proc = subprocess.run([sys.executable, "-m", "videorft", "retrain", "--train-deployment", "train-stage/gpu"],
                          cwd=ws, env=stack_env(stack, ws), capture_output=True, text=True, timeout=900)
    return proc


def summary(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def set_params(ws, **sections):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack["env"]["MLFLOW_TRACKING_URI"])


def flow_runs(stack, flow_run_id: str) -> dict:
    c = client(stack)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    return {r.data.tags.get("stage", "parent"): r for r in runs}


def model_name(ws) -> str:
    return yaml.safe_load((ws / "params.yaml").read_text())["register"]["model_name"]


def in_sync_with_remote(stack, ws, stages=STAGES) -> str:
    """`dvc status --cloud` for `stages`: what their lock entries name is in the remote."""
    return sh([sys.executable, "-m", "dvc", "status", "--cloud", *stages], ws, stack_env(stack, ws)).stdout


def test_failing_stage_leaves_registry_and_remote_consistent(stack, machines):
    """First retrain: every stage up to train runs (train on the GPU machine), then evaluate breaks."""
    cpu, gpu = machines
    set_params(cpu, evaluate={"batch_size": 0})
    failed = retrain(stack, cpu)
    assert failed.returncode == 1, failed.stderr[-3000:]
    line = failed.stderr[failed.stderr.index("retrain: flow run "):]
    assert "stage 'evaluate': repro failed" in line, line
    runs = flow_runs(stack, line.split()[3])
    assert runs["train"].data.tags["dvc.outcome"] == "ran" and runs["evaluate"].info.status == "FAILED"
    assert runs["parent"].info.status == "FAILED" and "register" not in runs
    # trained on the GPU machine; the model reached the CPU machine through the remote
    assert (gpu / "models/run/model.safetensors").exists()
    assert (cpu / "models/run/model.safetensors").read_bytes() == (gpu / "models/run/model.safetensors").read_bytes()
    # registry: nothing registered for the unevaluated model; remote: everything made so far, complete
    assert not client(stack).search_model_versions(f"name = '{model_name(cpu)}'")
    assert "in sync" in in_sync_with_remote(stack, cpu, STAGES[:6])
    assert_remote_consistent(stack)


def test_rerun_completes_with_every_stage_nested_in_one_mlflow_run(stack, machines):
    cpu, gpu = machines
    set_params(cpu, evaluate={"batch_size": 8})
    out = summary(retrain(stack, cpu))
    assert set(STAGES) <= set(out["stages"])
    assert not any(out["stages"][s]["ran"] for s in STAGES[:6]), out["stages"]  # done before: DVC skips them
    assert out["stages"]["evaluate"]["ran"] and out["stages"]["register"]["ran"]
    runs = flow_runs(stack, out["flow_run_id"])
    parent = runs.pop("parent")
    assert parent.info.status == "FINISHED" and parent.data.tags["git_commit"] == out["git_commit"]
    assert set(STAGES) <= set(runs)
    for stage, run in runs.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, stage
        assert run.data.tags["prefect.flow_run_id"] == out["flow_run_id"], stage
        assert run.info.status == "FINISHED", stage
    # the model registered is the one trained by the first flow run, inside the nested run that run made for train:
    # the train stage resumed it on the other machine and logged its reward curve there
    train_run_id = json.loads((cpu / "models/run/train_summary.json").read_text())["mlflow_run_id"]
    train_run = client(stack).get_run(train_run_id)
    assert train_run.data.tags["stage"] == "train" and train_run.data.tags["host"]
    assert train_run.data.tags["mlflow.parentRunId"] != parent.info.run_id  # the first flow run's parent
    steps = yaml.safe_load((cpu / "params.yaml").read_text())["train"]["max_steps"]
    assert len(client(stack).get_metric_history(train_run_id, "reward")) == steps
    version = client(stack).get_model_version_by_alias(model_name(cpu), "staging")
    assert version.tags["train_run_id"] == train_run_id
    if "promote" in out["stages"]:  # the gate decides; the alias agrees with what the flow reported
        promoted = out["stages"]["promote"]["promoted"]
        aliases = client(stack).get_registered_model(model_name(cpu)).aliases
        assert ("production" in aliases) == promoted, (aliases, out["stages"]["promote"])
    assert "in sync" in in_sync_with_remote(stack, cpu)
    assert_remote_consistent(stack)
