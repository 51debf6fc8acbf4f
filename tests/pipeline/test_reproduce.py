"""Reproducing and sweeping with DVC alone, on the tiny run of the shared workspace (tests/pipeline/conftest.py):

- a run is a commit (code + params + dvc.lock): a fresh clone of this repository finds only outputs missing, no
  dependency changed (the committed dvc.lock was made by the committed code and params);
- a fresh clone with access to the cache gets every output back
  with `dvc pull`, `dvc repro` then runs nothing, and recomputing the data stages and the tiny model from scratch
  gives bit-identical outputs (dvc.lock unchanged);
- `dvc exp run -S section.key=value` sweeps a parameter: only the stages that read it run, and the experiment is
  listed with its parameter and metrics.
"""
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from tests.pipeline.conftest import GIT, ROOT, sh, workspace_env

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
DETERMINISTIC = ["synthesize", "ingest", "extract_frames", "build_samples", "tiny_model"]


@pytest.fixture
def run_commit(repro_workspace, tmp_path):
    """A copy of the shared workspace with its run committed (git), so that tests can change it freely."""
    ws, _, _ = repro_workspace
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    env = workspace_env(copy)
    sh(GIT + ["add", "-A"], copy, env)
    sh(GIT + ["commit", "-qm", "run"], copy, env)
    return copy, env


def test_a_fresh_clone_of_this_repository_agrees_with_its_dvc_lock(tmp_path):
    """The committed dvc.lock is the committed code's run: in a fresh clone (HEAD; uncommitted changes do not
    count), `dvc status` may find outputs missing (no cache here), never a dependency or parameter changed. A commit
    of code or params.yaml that a stage depends on, without the dvc.lock of a run on it, fails here: `dvc repro`
    (bash scripts/demo.sh), then commit dvc.lock and metrics/*.json with it."""
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, workspace_env(ROOT))
    env = workspace_env(clone)
    made = [next(iter(out)) if isinstance(out, dict) else out
            for stage in yaml.safe_load((clone / "dvc.yaml").read_text())["stages"].values()
            for key in ("outs", "metrics", "plots") for out in stage.get(key, [])]

    def missing_output(path: str) -> bool:  # what another stage makes: absent until pulled or reproduced
        return any(path == out or path.startswith(out.rstrip("/") + "/") for out in made)

    status = json.loads(sh(DVC + ["status", "--json"], clone, env).stdout)
    wrong = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # e.g. "changed command", a stage missing from dvc.lock
                wrong.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                for path, what in paths.items():
                    if not ((kind == "changed outs" and what in ("not in cache", "deleted"))
                            or (kind == "changed deps" and what == "deleted" and missing_output(path))):
                        wrong.append(f"{stage}: {kind} {path}: {what}")
    last = sh(["git", "log", "-1", "--format=%h %cs %s", "--", "dvc.lock"], clone, env).stdout.strip()[:100]
    assert not wrong, f"dvc.lock (last committed: {last}) is not the committed code's run:\n" + "\n".join(wrong)


def test_fresh_clone_reproduces_the_run_from_dvc_lock(run_commit, tmp_path):
    ws, _ = run_commit
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(ws), str(clone)], tmp_path, workspace_env(ws))
    env = workspace_env(clone)
    assert not (clone / "models/run").exists()
    # the run's cache as this machine's remote (a folder here; s3:// in production, same commands)
    sh(DVC + ["remote", "add", "--local", "-d", "origin", str(ws / ".dvc/cache")], clone, env)
    sh(DVC + ["pull"], clone, env)
    assert (clone / "models/run/model.safetensors").read_bytes() == (ws / "models/run/model.safetensors").read_bytes()
    assert "Running stage" not in sh(DVC + ["repro"], clone, env).stdout
    status = sh(DVC + ["status", "--json"], clone, env).stdout
    assert json.loads(status) == {}, status
    # recompute the deterministic stages from nothing: the same bytes as the lock records
    for out in ("data", "models/tiny-qwen2_5_vl"):
        shutil.rmtree(clone / out)
    shutil.rmtree(clone / ".dvc/cache")
    sh(DVC + ["remote", "remove", "--local", "origin"], clone, env)
    rerun = sh(DVC + ["repro", "--force", "--single-item", *DETERMINISTIC], clone, env)
    assert all(f"Running stage '{s}'" in rerun.stdout for s in DETERMINISTIC)
    diff = subprocess.run(GIT + ["diff", "dvc.lock"], cwd=clone, capture_output=True, text=True)
    assert diff.stdout == "", f"recomputed outputs differ from the run's dvc.lock:\n{diff.stdout}\n{changed(ws, clone)}"


def changed(ws, clone, outs=("data", "models/tiny-qwen2_5_vl")) -> str:
    """Which files of the recomputed outputs differ from the run's (what a failure needs to be understood)."""
    lines = []
    for out in outs:
        mine = {f.relative_to(ws): f for f in (ws / out).rglob("*") if f.is_file()}
        again = {f.relative_to(clone): f for f in (clone / out).rglob("*") if f.is_file()}
        lines += [f"only in the run: {f}" for f in sorted(mine.keys() - again.keys())]
        lines += [f"only recomputed: {f}" for f in sorted(again.keys() - mine.keys())]
        lines += [f"differs: {f} ({mine[f].stat().st_size} vs {again[f].stat().st_size} bytes)"
                  for f in sorted(mine.keys() & again.keys()) if mine[f].read_bytes() != again[f].read_bytes()]
    return "\n".join(lines[:40]) or "no file differs"


def test_exp_run_sweeps_a_parameter(run_commit):
    ws, env = run_commit
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db"}  # the copy's own registry
    exp = sh(DVC + ["exp", "run", "-n", "fewer-eval", "-S", "evaluate.max_samples_per_task=1"], ws, env)
    ran = {s for s in ("train", "evaluate", "register") if f"Running stage '{s}'" in exp.stdout}
    assert ran == {"evaluate", "register"}, exp.stdout[-3000:]  # train does not read evaluate.*
    shown = json.loads(sh(DVC + ["exp", "show", "--json"], ws, env).stdout)
    found = [e for commit in shown for e in commit.get("experiments") or []
             if any(rev.get("name") == "fewer-eval" for rev in e.get("revs", []))]
    assert found, json.dumps(shown)[:3000]
    [rev] = [r for r in found[0]["revs"] if r["name"] == "fewer-eval"]
    params = rev["data"]["params"]["params.yaml"]["data"]
    assert params["evaluate"]["max_samples_per_task"] == 1
    metrics = rev["data"]["metrics"]["metrics/eval.json"]["data"]
    assert set(metrics["candidate"]["metrics"]) == {"tg", "gqa", "tracking", "qa"}
