"""The README's order on one machine: the demo first (`dvc repro` registers into the workspace's SQLite MLflow),
then "Operate it" (the retrain flow on the stack). DVC finds every stage up to date, register included, since the
tracking server is no DVC dependency; the flow asks the stack's registry, finds the version missing there,
registers it and records a promotion decision on it. Before issue 15 this stopped at promote with "no version
has alias 'staging'".
"""
import json
import subprocess
import sys

import pytest
from tests.flows.machines import make_workspace, sh, stack_env, workspace_env
from tests.pipeline.conftest import TINY

pytestmark = pytest.mark.slow
MODEL = "videorft-demo-then-stack"  # the session's stack is shared: a name no other flow test registers
DATA_STAGES = ["synthesize", "ingest", "extract_frames", "build_samples", "tiny_model", "train", "evaluate"]


def test_demo_then_retrain_on_the_stack_registers_there_and_records_a_decision(stack, tmp_path):
    from mlflow import MlflowClient

    ws = make_workspace(tmp_path, {**TINY, "register": {"model_name": MODEL}})
    sh([sys.executable, "-m", "dvc", "repro"], ws, workspace_env(ws))  # the demo, into sqlite:///<ws>/mlflow.db
    demo = json.loads((ws / "metrics/register.json").read_text())
    assert demo["tracking_uri"].startswith("sqlite:") and demo["version"] == "1"

    env = stack_env(stack, ws)
    proc = subprocess.run([sys.executable, "-m", "videorft", "retrain"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]  # a refused gate is a decision: the flow still completes
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert not any(out["stages"][s]["ran"] for s in DATA_STAGES), out["stages"]  # nothing trained again
    assert out["stages"]["register"]["ran"], out["stages"]

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(MODEL, "staging")
    train_run_id = json.loads((ws / "models/run/train_summary.json").read_text())["mlflow_run_id"]
    assert version.tags["train_run_id"] == train_run_id  # the demo's training run, registered on the stack
    assert "promote" in out["stages"]
    version = client.get_model_version(MODEL, version.version)
    assert version.tags["promotion.decision"] in ("promoted", "refused", "already_production"), version.tags
    assert any(k.startswith("decision.") for k in version.tags)
    aliases = client.get_registered_model(MODEL).aliases
    assert ("production" in aliases) == out["stages"]["promote"]["promoted"]

    # and again: the stack has it now, so the next run reuses it instead of registering twice
    again = subprocess.run([sys.executable, "-m", "videorft", "retrain"], cwd=ws, env=env, capture_output=True,
                           text=True, timeout=900)
    out2 = json.loads(again.stdout[again.stdout.index("{"):])
    assert not out2["stages"]["register"]["ran"], out2["stages"]
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
