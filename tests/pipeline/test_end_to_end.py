"""The whole pipeline on a tiny synthetic dataset, in a fresh copy of the repository: `dvc repro` runs every
stage and leaves a registered model version with an alias, metrics and per-task reward curves in MLflow; a
second `dvc repro` runs nothing; the Prefect flow runs the same pipeline."""
import sys

import pytest
from tests.pipeline.conftest import TINY, sh  # the workspace copy, shared with tests/flows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(repro_workspace):
    return repro_workspace


def test_repro_registers_a_model_with_alias_and_metrics(workspace):
    ws, env, first = workspace
    for stage in ("synthesize", "ingest", "extract_frames", "build_samples", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    # the tiny random model is in git (dvc.yaml: cache false) and matches dvc.lock: nothing to run
    assert "Stage 'tiny_model' didn't change, skipping" in first.stdout
    from mlflow import MlflowClient

    from stages.io import read_json

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    reg = read_json(ws / "metrics/register.json")
    version = client.get_model_version_by_alias(reg["model_name"], reg["alias"])
    assert str(version.version) == reg["version"] and version.tags["train_run_id"] == reg["train_run_id"]
    run = client.get_run(reg["train_run_id"])
    evals = read_json(ws / "metrics/eval.json")
    assert set(evals["candidate"]["metrics"]) == {"tg", "gqa", "tracking", "qa"}
    assert "eval/candidate/tg/mIoU" in run.data.metrics
    steps = TINY["train"]["max_steps"]
    assert len(client.get_metric_history(run.info.run_id, "reward")) == steps
    # per-task reward curves: a step whose rollouts hold no sample of a task logs no point for it (not a 0)
    curves = {}
    for task in ("tg", "gqa", "tracking", "qa"):
        names = [m for m in run.data.metrics if m.startswith(f"rewards/{task}_") and m.endswith("/mean")]
        if names:
            curves[task] = len(client.get_metric_history(run.info.run_id, names[0]))
    assert len(curves) >= 2 and all(1 <= n <= steps for n in curves.values()), curves
    assert (ws / "models/run/model.safetensors").exists()
    stats = read_json(ws / "data/samples/stats.json")
    assert stats["train"] and stats["eval"]


def test_dvc_links_the_data_outs_into_its_cache(workspace):
    """.dvc/config's cache.type: a video is one inode under data/synthetic, the ingest cache, data/raw and DVC's
    cache (cache.type "hardlink,copy"), not a copy per name."""
    ws, _, _ = workspace
    video = sorted((ws / "data/raw/videos").glob("*.mp4"))[0]
    source = ws / "data/synthetic/videos" / video.name
    assert video.stat().st_ino == source.stat().st_ino
    assert video.stat().st_nlink >= 4  # source, ingest cache blob, data/raw, DVC's cache


def test_second_repro_runs_nothing(workspace):
    ws, env, _ = workspace
    again = sh([sys.executable, "-m", "dvc", "repro"], ws, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout


def test_prefect_flow_runs_the_same_pipeline(workspace):
    ws, env, _ = workspace
    proc = sh([sys.executable, "-c", "from flows.pipeline import pipeline; print(pipeline())"], ws, env)
    assert "'register'" in proc.stdout
    assert "Running stage" not in proc.stdout  # DVC found every stage up to date
