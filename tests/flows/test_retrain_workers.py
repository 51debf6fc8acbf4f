"""The retrain flow across two machines on the real local stack, with a small DVC pipeline of the real stage names
(ingest -> train -> evaluate) so that the orchestration itself is what takes the time:

- train goes to the `gpu` process pool (a worker in another copy of the repository) and data crosses only through
  the DVC remote on S3; a retry-safe stage that fails once is retried, a failing stage fails the flow with its name,
  the remote stays consistent, and a re-run completes, skipping what is done;
- cancelling a retrain run (Prefect API) stops the training process on the GPU machine;
- a GPU machine that dies mid-training is detected (heartbeats), the flow fails clearly, and a re-run completes.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.flows.machines import (Worker, alive, assert_remote_consistent, child_runs, deploy, make_workspace,
                                  prefect_client, stack_env, wait_final, wait_for)

pytestmark = pytest.mark.slow

TOY_DVC = """stages:
  ingest:
    cmd: python toy.py ingest
    deps: [toy.py]
    params:
      - toy.yaml: [value, flaky_ingest]
    outs: [data]
  train:
    cmd: python toy.py train
    deps: [toy.py, data]
    params:
      - toy.yaml: [value, train_sleep]
    outs: [model]
    metrics:
      - metrics/toy_train.json: {cache: false}
  evaluate:
    cmd: python toy.py evaluate
    deps: [toy.py, model]
    params:
      - toy.yaml: [fail_evaluate]
    outs: [report.txt]
"""

TOY_PY = '''"""Toy stages: ingest writes data, train (its pid in pids/, then sleeps) writes model, evaluate reads it."""
import json, os, pathlib, sys, time, yaml
p = yaml.safe_load(open("toy.yaml"))
stage = sys.argv[1]
if stage == "ingest":
    marker = pathlib.Path(".ingest-attempted")
    if p["flaky_ingest"] and not marker.exists():  # fails once, like a source that times out
        marker.write_text("")
        sys.exit("ingest: source timed out")
    pathlib.Path("data").mkdir(exist_ok=True)
    pathlib.Path("data/a.txt").write_text(str(p["value"]))
elif stage == "train":
    pathlib.Path("pids").mkdir(exist_ok=True)
    pathlib.Path(f"pids/train-{os.getpid()}").write_text("")
    time.sleep(p["train_sleep"])
    pathlib.Path("model").mkdir(exist_ok=True)
    pathlib.Path("model/w.txt").write_text(pathlib.Path("data/a.txt").read_text() * 2)
    pathlib.Path("metrics").mkdir(exist_ok=True)
    pathlib.Path("metrics/toy_train.json").write_text(json.dumps({"value": p["value"]}))
elif stage == "evaluate":
    if p["fail_evaluate"]:
        sys.exit("evaluate: the model file is unreadable")
    pathlib.Path("report.txt").write_text("report " + pathlib.Path("model/w.txt").read_text())
'''
TOY_PARAMS = {"value": 1, "train_sleep": 0, "flaky_ingest": False, "fail_evaluate": False}


def set_toy(ws: Path, **values) -> None:
    params = yaml.safe_load((ws / "toy.yaml").read_text())
    params.update(values)
    (ws / "toy.yaml").write_text(yaml.safe_dump(params))


def new_machine(tmp_path_factory, name: str) -> Path:
    ws = tmp_path_factory.mktemp(name)
    (ws / "toy.py").write_text(TOY_PY)
    (ws / "toy.yaml").write_text(yaml.safe_dump(TOY_PARAMS))
    return make_workspace(ws, tiny={}, dvc_yaml=TOY_DVC)


@pytest.fixture(scope="module")
def machines(stack, tmp_path_factory):
    """A CPU machine and a GPU machine (separate checkouts), deployments from infra/prefect/prefect.yaml, and a
    worker on each pool."""
    cpu, gpu = new_machine(tmp_path_factory, "cpu"), new_machine(tmp_path_factory, "gpu")
    deploy(cpu, stack_env(stack, cpu))
    workers = {"cpu": Worker("cpu", cpu, stack_env(stack, cpu)).start(),
               "gpu": Worker("gpu", gpu, stack_env(stack, gpu)).start()}
    try:
        yield cpu, gpu, workers
    finally:
        for w in workers.values():
            w.stop()


def retrain_cli(stack, ws: Path, *args: str) -> subprocess.CompletedProcess:
    """`videorft retrain` on the CPU machine, training on the gpu pool (as an operator runs it by hand)."""
    return subprocess.run([sys.executable, "-m", "videorft", "retrain", "--train-deployment", "train-stage/gpu",
                           *args], cwd=ws, env=stack_env(stack, ws), capture_output=True, text=True, timeout=600)


def mlflow_runs(stack, flow_run_id: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack["env"]["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    return {r.data.tags.get("stage", "parent"): r for r in runs}


def task_run_counts(stack, flow_run_id: str) -> dict[str, int]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(stack) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.run_count for r in runs}


def test_failing_stage_then_rerun_hands_data_through_s3(stack, machines):
    cpu, gpu, workers = machines
    set_toy(cpu, value=1, flaky_ingest=True, fail_evaluate=True)
    failed = retrain_cli(stack, cpu, "--no-promote")
    assert failed.returncode == 1, failed.stderr[-3000:]
    summary = failed.stderr[failed.stderr.index("retrain: flow run "):]  # the CLI's last words: one clear line
    assert "Failed" in summary and "stage 'evaluate': repro failed" in summary, summary
    assert "evaluate: the model file is unreadable" in summary, summary
    flow_run_id = summary.split()[3]
    counts = task_run_counts(stack, flow_run_id)
    assert counts["ingest"] == 2, counts      # failed once, retried: ingest is retry-safe
    assert counts["evaluate"] == 2, counts    # retried once (RETRIES), then the flow failed
    runs = mlflow_runs(stack, flow_run_id)
    assert runs["parent"].info.status == "FAILED" and "evaluate" in runs["parent"].data.tags["error"]
    assert runs["evaluate"].info.status == "FAILED"
    assert runs["train"].info.status == "FINISHED" and runs["train"].data.tags["dvc.outcome"] == "ran"
    # training happened on the GPU machine only; its model came back through the remote
    assert list((gpu / "pids").iterdir()) and not (cpu / "pids").exists()
    assert (cpu / "model" / "w.txt").read_text() == "11"
    assert json.loads((cpu / "metrics" / "toy_train.json").read_text()) == {"value": 1}
    assert_remote_consistent(stack)

    set_toy(cpu, fail_evaluate=False)
    rerun = retrain_cli(stack, cpu, "--no-promote")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    out = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert out["stages"]["ingest"]["ran"] is False and out["stages"]["train"]["ran"] is False
    assert out["stages"]["evaluate"]["ran"] is True
    assert (cpu / "report.txt").read_text() == "report 11"
    runs = mlflow_runs(stack, out["flow_run_id"])
    parent = runs.pop("parent")
    assert parent.info.status == "FINISHED" and parent.data.tags["git_commit"] == out["git_commit"]
    assert set(runs) == {"ingest", "train", "evaluate"}
    for stage, run in runs.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, stage
        assert run.data.tags["git_commit"] == out["git_commit"], stage
    [train_run] = child_runs(stack, out["flow_run_id"])  # the train-stage run on the gpu pool, a child in Prefect
    assert runs["train"].data.tags["deployment_flow_run_id"] == str(train_run.id)
    assert train_run.state.is_completed()
    keys = assert_remote_consistent(stack)
    assert any(k.endswith(".dir") for k in keys)


def _start_long_training(stack, cpu: Path, gpu: Path, value: int):
    """Start the retrain deployment (on the cpu worker) with a train stage that runs until stopped."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    set_toy(cpu, value=value, train_sleep=600, flaky_ingest=False)
    for f in (gpu / "pids").glob("*"):
        f.unlink()
    with temporary_settings({PREFECT_API_URL: stack["env"]["PREFECT_API_URL"]}):
        run = run_deployment("retrain/nightly", parameters={"promote": False}, timeout=0)
    pid_file = wait_for(lambda: next((gpu / "pids").glob("train-*"), None), 240, "training to start on the GPU")
    pid = int(pid_file.name.split("-")[1])
    assert alive(pid)
    return run, pid


def test_cancelling_a_retrain_run_stops_its_training(stack, machines):
    from prefect.states import Cancelling

    cpu, gpu, workers = machines
    run, pid = _start_long_training(stack, cpu, gpu, value=2)
    with prefect_client(stack) as client:
        client.set_flow_run_state(run.id, Cancelling(message="operator cancel"), force=True)
    wait_for(lambda: not alive(pid), 60, f"training process {pid} to stop")
    assert wait_final(stack, run.id, 60).state.is_cancelled()
    [train_run] = child_runs(stack, run.id)
    assert wait_final(stack, train_run.id, 60).state.is_cancelled()
    runs = wait_for(lambda: (r := mlflow_runs(stack, str(run.id))) and r["train"].info.status == "KILLED" and r,
                    30, "MLflow runs of the cancelled flow run marked KILLED")
    assert runs["parent"].info.status == "KILLED"


def test_dead_gpu_machine_fails_the_run_clearly_and_a_rerun_completes(stack, machines):
    cpu, gpu, workers = machines
    run, pid = _start_long_training(stack, cpu, gpu, value=3)
    keys_before = assert_remote_consistent(stack)
    victims = workers["gpu"].kill_machine()
    assert pid in victims
    wait_for(lambda: not alive(pid), 30, f"training process {pid} to die with its machine")  # SIGKILL lands async
    t0 = time.monotonic()
    final = wait_final(stack, run.id, 240)  # zombie automation: no heartbeat for ZOMBIE_AFTER_S -> Crashed
    print(f"dead GPU machine detected after {time.monotonic() - t0:.0f} s")
    assert final.state.is_failed()
    [train_run] = child_runs(stack, run.id)
    assert train_run.state.is_crashed()
    assert "no heartbeat" in train_run.state.message
    runs = mlflow_runs(stack, str(run.id))
    assert runs["parent"].info.status == "FAILED" and "ended Crashed" in runs["parent"].data.tags["error"]
    assert "evaluate" not in runs  # nothing after train ran
    assert assert_remote_consistent(stack) == keys_before  # the dead machine pushed nothing

    workers["gpu"] = Worker("gpu", gpu, workers["gpu"].env).start()  # the machine is back
    set_toy(cpu, train_sleep=0)
    rerun = retrain_cli(stack, cpu, "--no-promote")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    out = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert out["stages"]["ingest"]["ran"] is False and out["stages"]["train"]["ran"] is True
    assert (cpu / "report.txt").read_text() == "report 33"
    assert_remote_consistent(stack)
