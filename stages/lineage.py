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
"""
from __future__ import annotations

import contextlib
import os
import subprocess
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


def git_commit(cwd: str | os.PathLike = ".") -> str:
    """HEAD of the repository at `cwd`, with '-dirty' when tracked files differ (dvc.lock aside: running stages
    rewrites it); 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)dvc.lock"], cwd=cwd, capture_output=True, text=True,
                               check=True).stdout.strip()
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


def stage_run_kwargs(stage: str, run_name: str | None = None, tags: dict | None = None) -> dict:
    """Arguments for `mlflow.start_run` that honour the contract (for stages that manage the run themselves):

    Under a flow: MLflow resumes the run the flow created for this stage (MLFLOW_RUN_ID); with only a parent
    given, the run is nested under it. Inside another active run: nested under that one. Alone: a new run.
    Every case tags the run with the stage, the commit and, under a flow, the Prefect flow run id.
    """
    import mlflow

    kwargs: dict = {"run_name": run_name, "tags": {TAG_STAGE: stage, **lineage_tags(), **(tags or {})}}
    if mlflow.active_run() is not None:
        kwargs["nested"] = True
    elif os.environ.get(PARENT_RUN_ID) and not os.environ.get(RUN_ID):
        kwargs["parent_run_id"] = os.environ[PARENT_RUN_ID]
    return kwargs


@contextlib.contextmanager
def start_stage_run(stage: str, run_name: str | None = None, tags: dict | None = None) -> Iterator:
    """Start the MLflow run of `stage` (call after `stages.tracking.setup`) and yield it: see stage_run_kwargs."""
    import mlflow

    with mlflow.start_run(**stage_run_kwargs(stage, run_name, tags)) as run:
        yield run
