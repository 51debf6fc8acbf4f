"""The flow <-> stage contract of stages/lineage.py with a real MLflow store: the flow makes the parent run and a
stage's nested run; a stage process given the environment logs into that nested run, whether it calls
`start_stage_run` or plain `mlflow.start_run` (as stages/train.py does today)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from flows.mlflow_runs import FlowRuns, kill_open_runs, resolve_tracking
from stages import lineage

ROOT = Path(__file__).resolve().parents[2]

STAGE = """
import json, sys, mlflow
from stages.lineage import start_stage_run
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment(sys.argv[2])
if sys.argv[3] == "helper":
    with start_stage_run("train", run_name="train-tiny") as run:
        mlflow.log_metric("reward", 0.5, step=1)
else:  # what a stage that knows nothing of flows does
    with mlflow.start_run(run_name="train-tiny") as run:
        mlflow.log_metric("reward", 0.5, step=1)
print(json.dumps({"run_id": run.info.run_id}))
"""


def stage_process(uri: str, experiment: str, how: str, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-c", STAGE, uri, experiment, how], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]


def test_stage_env_names_only_what_is_known():
    assert lineage.stage_env(stage_run_id="r", flow_run_id="f") == {lineage.RUN_ID: "r", lineage.FLOW_RUN_ID: "f"}
    assert lineage.lineage_tags({lineage.FLOW_RUN_ID: "f", lineage.GIT_COMMIT: "abc"}) == {
        lineage.TAG_FLOW_RUN_ID: "f", lineage.TAG_GIT_COMMIT: "abc"}
    assert lineage.git_commit(Path("/")) == "unknown"


def test_stages_log_into_the_runs_the_flow_made(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(lineage.EXPERIMENT, raising=False)
    (tmp_path / "params.yaml").write_text("mlflow:\n  tracking_uri: sqlite:///runs.db\n  experiment: lineage\n")
    uri, experiment = resolve_tracking(tmp_path)
    assert uri == f"sqlite:///{tmp_path / 'runs.db'}" and experiment == "lineage"  # relative -> the workspace's
    runs = FlowRuns(uri, experiment, flow_run_id="flow-1", commit="c0ffee")
    parent = runs.start_parent("retrain-x", {"stages": "train"})
    client = runs.client

    for how in ("helper", "plain"):  # the nested run the flow made is the one the stage logs into
        child = runs.start_stage("train")
        got = stage_process(uri, experiment, how, lineage.stage_env(child, parent, experiment, "flow-1", "c0ffee"))
        assert got == child, how
        runs.end_stage(child, {"ran": True, "host": "gpu-1"})
        run = client.get_run(child)
        assert run.data.metrics["reward"] == 0.5 and run.info.run_name == "train-tiny"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags[lineage.TAG_FLOW_RUN_ID] == "flow-1" and run.data.tags["host"] == "gpu-1"
        assert run.info.status == "FINISHED" and run.data.tags["dvc.outcome"] == "ran"

    # only the parent known (a stage starting a run the flow did not make): nested under it, tagged
    got = stage_process(uri, experiment, "helper", lineage.stage_env(None, parent, experiment, "flow-1", "c0ffee"))
    extra = client.get_run(got)
    assert extra.data.tags["mlflow.parentRunId"] == parent and extra.data.tags[lineage.TAG_GIT_COMMIT] == "c0ffee"
    # no flow at all (`dvc repro` alone): a top-level run, tagged with the checkout's commit
    alone = client.get_run(stage_process(uri, experiment, "helper", {}))
    assert "mlflow.parentRunId" not in alone.data.tags and lineage.TAG_FLOW_RUN_ID not in alone.data.tags
    assert alone.data.tags[lineage.TAG_GIT_COMMIT] == lineage.git_commit(ROOT)

    failing = runs.start_stage("evaluate")
    runs.end_stage(failing, error="stage 'evaluate': repro failed")
    assert client.get_run(failing).info.status == "FAILED"
    assert kill_open_runs(uri, "flow-1") == 1  # the parent, still open
    assert client.get_run(parent).info.status == "KILLED"


def test_dvc_own_writes_do_not_make_a_checkout_dirty_and_register_uses_the_same_rule(tmp_path):
    from stages import register

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    (tmp_path / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: x\n    outs:\n"
                                       "      - metrics/eval.json: {cache: false}\n      - data/out\n")
    (tmp_path / "metrics").mkdir()
    for name in ("dvc.lock", "metrics/eval.json", "code.py"):
        (tmp_path / name).write_text("v1\n")
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = lineage.git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "metrics/eval.json").write_text("v2\n")  # what dvc repro rewrites: still clean
    assert lineage.git_commit(tmp_path) == head and register.git_commit is lineage.git_commit
    (tmp_path / "code.py").write_text("v2\n")
    assert lineage.git_commit(tmp_path) == f"{head}-dirty"
