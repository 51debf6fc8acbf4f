"""Scratch copies of the repository for the pipeline and flow tests: the files git knows (tracked and untracked,
not ignored) in a fresh git repository, with params.yaml shrunk to a tiny run.

`make_workspace` is imported by tests/flows too (one helper, one copy rule)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # test modules import helpers as tests.pipeline.conftest (unique, unlike `conftest`)
    sys.path.insert(0, str(ROOT))

TINY = {
    "synthesize": {"num_videos": 8, "num_tracking_sequences": 4, "min_duration": 4.0, "max_duration": 6.0},
    "build_samples": {"eval_fraction": 0.25, "weights": {}},
    "train": {"max_steps": 3, "per_device_train_batch_size": 16, "num_generations": 4,
              "max_completion_length": 16, "save_steps": 1, "logging_steps": 1,
              "task_groups": []},  # mixed batches: a 2-3 step run then sees every task (the demo's are one task each)
    "evaluate": {"max_new_tokens": 16, "max_samples_per_task": 2, "reward_probe": {"tg": 2, "tracking": 2}},
}
GIT = ["git", "-c", "user.email=ci@videorft", "-c", "user.name=ci"]


def sh(args, cwd, env, check=True, timeout=900):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def workspace_env(ws: Path, **extra) -> dict:
    """The environment a stage sees in `ws`: this venv first on PATH, the copy importable, no Prefect server."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ws), "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db"}
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def make_workspace(ws: Path, tiny: dict | None = None, dvc_yaml: str | None = None) -> Path:
    """Copy the repository into `ws` (a new git repo with one commit), params overridden by `tiny` (default TINY),
    dvc.yaml replaced by `dvc_yaml` when given."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (ws / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, ws / f)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for section, values in (TINY if tiny is None else tiny).items():
        params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if dvc_yaml is not None:
        (ws / "dvc.yaml").write_text(dvc_yaml)
    env = workspace_env(ws)
    sh(GIT + ["init", "-q"], ws, env)
    sh(GIT + ["add", "-A"], ws, env)
    sh(GIT + ["commit", "-qm", "snapshot"], ws, env)
    return ws


@pytest.fixture(scope="session")
def repro_workspace(tmp_path_factory):
    """A tiny workspace after one full `dvc repro` (shared by the pipeline tests: the repro is the slow part)."""
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    env = workspace_env(ws)
    first = sh([sys.executable, "-m", "dvc", "repro"], ws, env)
    return ws, env, first
