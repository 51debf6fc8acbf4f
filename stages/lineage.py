"""The contract between the orchestrating flow and the stages that log to MLflow.

One Prefect flow run = one MLflow parent run, with one nested run per stage. The flow creates the parent and,
before running a stage, that stage's nested run; it hands both to the stage process in environment variables:

    MLFLOW_RUN_ID          the stage's own run (nested under the parent). MLflow's `start_run()` resumes it, so a
                           stage that calls `mlflow.start_run(...)` once logs into it with no change.
    MLFLOW_PARENT_RUN_ID   the flow run's parent run (for stages that start further runs of their own).
    MLFLOW_EXPERIMENT_NAME the parent's experiment (a resumed run must live in the active experiment).
    VIDEORFT_FLOW_RUN_ID   the Prefect flow run id;   VIDEORFT_GIT_COMMIT  the commit the flow runs.

Stages stay free of Prefect: they read plain environment variables, and run the same without them (`dvc repro`
alone gives a top-level run). `start_stage_run` is the one call a stage needs; it works in all three cases.

Every run records the process that owns it (tags videorft.host, videorft.pid). A process killed without a chance
to end its run (SIGKILL, the OOM killer) leaves it RUNNING for ever; the next stage or flow that starts a run in
the experiment marks such runs KILLED (`kill_orphaned_runs`): only runs of its own host whose pid is gone.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

RUN_ID = "MLFLOW_RUN_ID"
PARENT_RUN_ID = "MLFLOW_PARENT_RUN_ID"
EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
FLOW_RUN_ID = "VIDEORFT_FLOW_RUN_ID"
GIT_COMMIT = "VIDEORFT_GIT_COMMIT"

# Tag names on every run of a flow run (parent and nested), so either can be found from the other system.
TAG_FLOW_RUN_ID = "prefect.flow_run_id"
TAG_GIT_COMMIT = "git_commit"
TAG_STAGE = "stage"
# The process that owns a run (it ends the run); see kill_orphaned_runs.
TAG_HOST = "videorft.host"
TAG_PID = "videorft.pid"


def dvc_written(cwd: str | os.PathLike = ".") -> list[str]:
    """What `dvc repro` itself rewrites in the repository: dvc.lock and every output dvc.yaml declares (the
    committed ones are the `cache: false` metrics files). Changes there do not make a checkout dirty."""
    import yaml

    paths = ["dvc.lock"]
    try:
        stages = (yaml.safe_load((Path(cwd) / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return paths
    for stage in stages.values():
        for out in (stage.get("outs") or []) + (stage.get("metrics") or []) + (stage.get("plots") or []):
            paths += [out] if isinstance(out, str) else list(out)
    return paths


def git_commit(cwd: str | os.PathLike = ".") -> str:
    """HEAD of the repository at `cwd`, with '-dirty' when tracked files differ, DVC's own writes aside (dvc.lock
    and the declared outputs: running stages rewrites them); 'unknown' outside git. The one definition: register
    tags versions with it, the flows tag runs with it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in dvc_written(cwd))], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def stage_env(stage_run_id: str | None = None, parent_run_id: str | None = None, experiment: str | None = None,
              flow_run_id: str | None = None, commit: str | None = None) -> dict[str, str]:
    """The variables a flow sets for a stage process (only the known ones)."""
    values = {RUN_ID: stage_run_id, PARENT_RUN_ID: parent_run_id, EXPERIMENT: experiment,
              FLOW_RUN_ID: flow_run_id, GIT_COMMIT: commit}
    return {k: v for k, v in values.items() if v}


def lineage_tags(env: dict | None = None) -> dict[str, str]:
    """Tags linking a run to its flow run and commit; outside a flow, the commit of the working directory."""
    env = os.environ if env is None else env
    tags = {TAG_GIT_COMMIT: env.get(GIT_COMMIT) or git_commit()}
    if env.get(FLOW_RUN_ID):
        tags[TAG_FLOW_RUN_ID] = env[FLOW_RUN_ID]
    return tags


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def kill_orphaned_runs(client, experiment_id: str, say=None) -> list[str]:
    """Mark KILLED the runs of an experiment left RUNNING by a process of this host that no longer exists; runs of
    other hosts, of live processes and without owner tags are left alone. Returns their ids; `say` gets one line
    per run (default: stderr)."""
    host = socket.gethostname()
    runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'")
    killed = []
    for run in runs:
        pid = run.data.tags.get(TAG_PID, "")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
        (say or (lambda m: print(m, file=sys.stderr)))(
            f"MLflow run {run.info.run_id} ({run.info.run_name}) was left RUNNING by process {pid} on {host}, "
            "which is gone: marked KILLED")
    return killed


def stage_run_kwargs(stage: str, run_name: str | None = None, tags: dict | None = None,
                     experiment_id: str | None = None) -> dict:
    """Arguments for `mlflow.start_run` that honour the contract (for stages that manage the run themselves):

    Under a flow: MLflow resumes the run the flow created for this stage (MLFLOW_RUN_ID); with only a parent
    given, the run is nested under it. Inside another active run: nested under that one. Alone: a new run.
    Every case tags the run with the stage, the commit, its owner process and, under a flow, the Prefect flow run id.
    """
    import mlflow

    kwargs: dict = {"run_name": run_name,
                    "tags": {TAG_STAGE: stage, **lineage_tags(), **owner_tags(), **(tags or {})}}
    if experiment_id is not None:  # a new run goes there instead of the active experiment
        kwargs["experiment_id"] = experiment_id
    if mlflow.active_run() is not None:
        kwargs["nested"] = True
    elif os.environ.get(PARENT_RUN_ID) and not os.environ.get(RUN_ID):
        kwargs["parent_run_id"] = os.environ[PARENT_RUN_ID]
    return kwargs


@contextlib.contextmanager
def start_stage_run(stage: str, run_name: str | None = None, tags: dict | None = None,
                    experiment_id: str | None = None) -> Iterator:
    """Start the MLflow run of `stage` (call after `stages.mlflow_log.setup`) and yield it: see stage_run_kwargs.
    Runs of its experiment that killed processes of this host left RUNNING are marked KILLED."""
    import mlflow

    with mlflow.start_run(**stage_run_kwargs(stage, run_name, tags, experiment_id)) as run:
        kill_orphaned_runs(mlflow.MlflowClient(), run.info.experiment_id, lambda m: print(f"{stage}: {m}"))
        yield run
