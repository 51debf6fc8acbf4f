"""The MLflow side of a flow run: one parent run per Prefect flow run, one nested run per stage, all tagged with
the flow run id and the git commit (stages/lineage.py is the contract the stage processes see).

The flow creates each stage's run before the stage starts and hands its id down; a stage that logs (train)
resumes it, a stage that does not leaves it holding what the flow knows: DVC ran or skipped it, how long it took.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from stages import lineage
from stages.params import MlflowParams, load_params
from stages.mlflow_log import HTTP_DEFAULTS, ensure_experiment, require_reachable


def resolve_tracking(ws: str | Path) -> tuple[str, str]:
    """(tracking URI, experiment) for a workspace: environment first, then its params.yaml. A relative SQLite path
    is made absolute so the flow and every stage process (cwd = workspace) open the same database."""
    params_file = Path(ws) / "params.yaml"
    p = load_params(params_file).mlflow if params_file.exists() else MlflowParams()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or p.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        uri = prefix + str(Path(ws).resolve() / uri[len(prefix):])
    return uri, os.environ.get(lineage.EXPERIMENT) or p.experiment


class FlowRuns:
    """Parent and nested MLflow runs of one flow run, written through the client (no global MLflow state)."""

    def __init__(self, uri: str, experiment: str, flow_run_id: str, commit: str):
        from mlflow import MlflowClient

        for key, value in HTTP_DEFAULTS.items():  # a server that is down fails in seconds, naming itself
            os.environ.setdefault(key, value)
        require_reachable(uri)
        self.uri, self.experiment, self.flow_run_id, self.commit = uri, experiment, flow_run_id, commit
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = ensure_experiment(self.client, experiment)
        self.parent_id: str | None = None
        self._started: dict[str, float] = {}

    def _tags(self, extra: dict) -> dict[str, str]:
        return {lineage.TAG_FLOW_RUN_ID: self.flow_run_id, lineage.TAG_GIT_COMMIT: self.commit,
                **lineage.owner_tags(), **{k: str(v) for k, v in extra.items()}}

    def start_parent(self, run_name: str, tags: dict) -> str:
        """The flow run's parent run; runs that killed processes of this host left RUNNING are marked KILLED."""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=self._tags(tags))
        self.parent_id = run.info.run_id
        lineage.kill_orphaned_runs(self.client, self.experiment_id, print)
        return self.parent_id

    def start_stage(self, stage: str) -> str:
        tags = self._tags({lineage.TAG_STAGE: stage, "mlflow.parentRunId": self.parent_id})
        run = self.client.create_run(self.experiment_id, run_name=stage, tags=tags)
        self._started[run.info.run_id] = time.monotonic()
        return run.info.run_id

    def end_stage(self, run_id: str, outcome: dict | None = None, error: str | None = None) -> None:
        seconds = time.monotonic() - self._started.pop(run_id, time.monotonic())
        self.client.log_metric(run_id, "stage_seconds", round(seconds, 2))
        tags = {"dvc.outcome": "failed" if error else ("ran" if outcome and outcome.get("ran") else "up to date")}
        for key in ("host", "worker_commit", "deployment_flow_run_id"):
            if outcome and outcome.get(key):
                tags[key] = outcome[key]
        if error:
            tags["error"] = error[-4000:]
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))
        self.client.set_terminated(run_id, "FAILED" if error else "FINISHED")

    def end_parent(self, status: str, tags: dict | None = None) -> None:
        for k, v in (tags or {}).items():
            self.client.set_tag(self.parent_id, k, str(v))
        self.client.set_terminated(self.parent_id, status)


def kill_open_runs(uri: str, flow_run_id: str) -> int:
    """Mark a cancelled or crashed flow run's unfinished MLflow runs KILLED; returns how many."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`{lineage.TAG_FLOW_RUN_ID}` = '{flow_run_id}' and "
                                    "attributes.status = 'RUNNING'") if exps else []
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)
