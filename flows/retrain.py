"""Retraining as a Prefect flow: the DVC stages in order, the training stages on a GPU work pool, then promotion.

    retrain       runs every stage of dvc.yaml with `dvc repro --single-item` on this machine, except the training
                  stages (sft, train), which go to the deployment named by `train_deployment` (or
                  VIDEORFT_TRAIN_DEPLOYMENT) and are awaited; with none configured (one machine, the embedded
                  default) they run here. After `register`, the promote stage's gate (stages.promote, the function
                  `videorft promote` calls) moves `production` if it passes.
    train_stage   the GPU side: receives the flow's dvc.lock and parameter files, pulls each stage's inputs from the
                  DVC remote, runs it under the GPU concurrency limit, pushes its outputs, and returns its lock
                  entry (plus uncached metrics) so that the flow's machine can pull what it made.

Data crosses machines only through the DVC remote (dvc push after a stage, dvc pull before the next); each machine
configures it from VIDEORFT_DVC_REMOTE_URL (+ VIDEORFT_DVC_REMOTE_ENDPOINT) or its own .dvc config. The small
handoff (lock entries, metrics) is the train-stage run's result, which Prefect persists in its result storage
(S3 on the stack: PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK). MLflow: one parent run per flow run, one nested run per
stage (flows/mlflow_runs.py; stages/lineage.py is what the stage processes see).
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run

from flows import workspace as wsp
from flows.mlflow_runs import FlowRuns, kill_open_runs, resolve_tracking
from stages import lineage
from stages.io import sha256_file, write_text
from stages.params import load_params

GPU_STAGES = ("sft", "train")                   # consecutive ones go to the GPU pool together, in one run
TRAIN_DEPLOYMENT = "VIDEORFT_TRAIN_DEPLOYMENT"  # e.g. "train-stage/gpu"
GPU_LIMIT = "gpu"                               # global concurrency limit: one slot per GPU
GPU_LEASE_S = 60  # renewed while training; a dead machine's slots return when it lapses (the server's minimum)

# Retrying a stage re-runs `dvc repro --single-item`. Safe where the stage is a deterministic function of its
# deps and params whose outputs are written atomically (a retry overwrites them or finds them up to date), and for
# register, which is idempotent per training run. Moving data (pull, push) is always safe to retry.
RETRIES = {"synthesize": 2, "ingest": 2, "extract_frames": 2, "build_samples": 2, "tiny_model": 2,
           "evaluate": 1, "register": 2}
NOT_RETRIED = {
    "sft": "a training failure is almost always deterministic (out of memory, bad data) and costs GPU hours",
    "train": "a training failure is almost always deterministic (out of memory, bad data, diverged) and each "
             "attempt costs GPU hours; a lost GPU machine shows as a crashed train-stage run",
    "promote": "a refused gate is a decision, not a fault; a promotion that failed midway needs a look "
               "(`videorft rollback` restores the previous alias)",
}


def _retry_is_safe(task, task_run, state) -> bool:
    try:
        state.result()
    except wsp.StageError as e:
        if e.phase in ("pull", "push"):
            return True
        return task_run.run_count <= RETRIES.get(e.stage, 0)
    except Exception:
        return False
    return False


@task(name="stage", task_run_name="{stage}", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_is_safe,
      cache_policy=NO_CACHE)
def stage_task(ws: str, stage: str, env: dict, remote: bool, force: bool = False) -> dict:
    """Pull inputs, `dvc repro --single-item`, push outputs; the stage's output streams into the run's logs."""
    log = get_run_logger()
    try:
        return wsp.run_stage(ws, stage, env=env, remote=remote, force=force, log=log.info).as_dict()
    except wsp.StageError as e:
        if e.phase == "repro" and not RETRIES.get(stage):
            log.error(f"not retried: {NOT_RETRIED.get(stage, 'not known to be safe to retry')}")
        raise


def stage_env(tracking_uri: str, **ids) -> dict:
    """A stage process's environment: this one, the tracking URI every machine agrees on, the lineage ids."""
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, **lineage.stage_env(**ids)}


@flow(name="train-stage", persist_result=True)
def train_stage(stages: list[str], lock: str | None = None, params: dict[str, str] | None = None,
                force: bool = False, mlflow_run_ids: dict[str, str] | None = None,
                mlflow_parent_run_id: str | None = None, experiment: str | None = None,
                parent_flow_run_id: str | None = None, commit: str | None = None, gpus: int = 1,
                workspace: str = ".") -> dict[str, dict]:
    """Run `stages` on this (GPU) machine for a retrain run on another, handing data through the DVC remote."""
    from prefect.concurrency.sync import concurrency

    log = get_run_logger()
    ws = Path(workspace).resolve()
    me = str(current_flow_run.id)
    with wsp.workspace_lock(ws, log.info, owner=me, shared_with=parent_flow_run_id):
        if not wsp.configure_remote_from_env(ws):
            raise wsp.StageError(stages[0], "remote", f"no DVC remote on {socket.gethostname()} ({ws}): what "
                                 f"the stage makes could not reach the flow's machine; set {wsp.REMOTE_URL}")
        if lock is not None:  # the flow's view of every stage: what to pull, what is up to date
            write_text(ws / "dvc.lock", lock)
        for path, text in (params or {}).items():  # the flow's parameters (a sweep may have changed them)
            write_text(ws / path, text)
        here = lineage.git_commit(ws)
        if commit and here.removesuffix("-dirty") != commit.removesuffix("-dirty"):
            log.warning(f"this worker's code is at {here}, the flow's at {commit}: DVC re-runs a stage whose code "
                        f"deps differ")
        uri, _ = resolve_tracking(ws)
        handoff = {}
        with concurrency(GPU_LIMIT, occupy=gpus, lease_duration=GPU_LEASE_S):  # no such limit: unlimited
            for stage in stages:
                env = stage_env(uri, stage_run_id=(mlflow_run_ids or {}).get(stage),
                                parent_run_id=mlflow_parent_run_id, experiment=experiment,
                                flow_run_id=parent_flow_run_id, commit=commit)
                outcome = stage_task(str(ws), stage, env, True, force)
                handoff[stage] = {**outcome, "lock": wsp.lock_entry(ws, stage), "files": wsp.uncached_files(ws, stage),
                                  "host": socket.gethostname(), "worker_commit": here, "deployment_flow_run_id": me}
        return handoff


def register_missing(ws: Path, uri: str) -> str | None:
    """Why register must run for the flow's registry although DVC finds it up to date (stages.register.missing_in):
    register.json names a version that this registry does not have (it was registered into another one)."""
    from stages.register import missing_in

    params = ws / "params.yaml"
    out = load_params(params).register.out if params.exists() else "metrics/register.json"
    return missing_in(ws / out, uri)


@dataclass
class RetrainRun:
    """What the stages of one retrain run share: the workspace, the remote, the MLflow runs, the lineage ids."""

    ws: Path
    remote: bool
    force: bool
    runs: FlowRuns
    parent: str
    flow_run_id: str
    commit: str

    def env(self, stage_run_id: str | None = None) -> dict:
        return stage_env(self.runs.uri, stage_run_id=stage_run_id, parent_run_id=self.parent,
                         experiment=self.runs.experiment, flow_run_id=self.flow_run_id, commit=self.commit)

    def tracked(self, stage: str, work) -> dict:
        """Run `work(stage_run_id)` inside the stage's nested MLflow run; the run records the outcome or error."""
        child = self.runs.start_stage(stage)
        try:
            outcome = work(child)
        except Exception as e:
            self.runs.end_stage(child, error=str(e))
            raise
        self.runs.end_stage(child, outcome)
        return outcome

    def run_here(self, stage: str) -> dict:
        force = self.force
        if stage == "register" and not force and (why := self._register_missing()):
            get_run_logger().info(f"register: {why}: registering there (dvc repro --force register)")
            force = True
        return self.tracked(stage, lambda child: stage_task(str(self.ws), stage, self.env(child), self.remote,
                                                            force))

    def _register_missing(self) -> str | None:
        try:
            return register_missing(self.ws, self.runs.uri)
        except Exception as e:  # the registry cannot answer: the stage itself reports it, naming the server
            get_run_logger().warning(f"register: could not ask {self.runs.uri} for the recorded version ({e})")
            return None

    def run_on_gpu(self, stages: list[str], deployment: str, timeout_s: float | None, gpus: int) -> dict:
        """Send `stages` to the GPU deployment in one run, each in its nested MLflow run; bring results here."""
        children = {s: self.runs.start_stage(s) for s in stages}
        try:
            handoff = _dispatch(deployment, self.ws, stages, timeout_s, dict(
                lock=(self.ws / "dvc.lock").read_text() if (self.ws / "dvc.lock").exists() else None,
                params={f: (self.ws / f).read_text() for s in stages for f in wsp.params_files(self.ws, s)},
                force=self.force, mlflow_run_ids=children, mlflow_parent_run_id=self.parent,
                experiment=self.runs.experiment, parent_flow_run_id=self.flow_run_id, commit=self.commit,
                gpus=gpus))
        except Exception as e:
            for child in children.values():
                self.runs.end_stage(child, error=str(e))
            raise
        for stage, child in children.items():
            self.runs.end_stage(child, handoff[stage])
        return handoff

    def promote(self) -> dict:
        by = f"retrain flow run {current_flow_run.name}"
        outcome = self.tracked("promote", lambda child: promote_task(str(self.ws), self.runs.uri, by))
        self.runs.client.set_tag(self.parent, "promoted", outcome["promoted"])
        return outcome


def _dispatch(deployment: str, ws: Path, stages: list[str], timeout_s: float | None, params: dict) -> dict:
    """Run `stages` through the GPU deployment, wait, and record their results in this workspace's dvc.lock."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    run = run_deployment(deployment, parameters={"stages": stages, **params}, timeout=timeout_s, poll_interval=2,
                         flow_run_name=f"{'+'.join(stages)}-for-{current_flow_run.name}")
    state, what = run.state, f"run {run.name} ({run.id}) of {deployment}"
    if state is None or not state.is_final():
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(message=f"not finished after {timeout_s} s"), force=True)
        raise wsp.StageError(stages[0], "gpu", f"{what} did not finish within {timeout_s} s; cancelled it. "
                             f"Re-run retrain: finished stages are skipped")
    if not state.is_completed():
        raise wsp.StageError(stages[0], "gpu", f"{what} ended {state.name}: {state.message or ''}. The remote "
                             f"holds only complete objects and the registry was not touched. Re-run retrain once "
                             f"the worker is back: finished stages are skipped")
    handoff = state.result()
    for stage in stages:
        wsp.set_lock_entry(ws, stage, handoff[stage]["lock"])
        for path, text in handoff[stage]["files"].items():
            write_text(ws / path, text)
    return handoff


@task(name="promote", task_run_name="promote", retries=0, cache_policy=NO_CACHE)
def promote_task(ws: str, tracking_uri: str, by: str) -> dict:
    """The promote stage's gate (stages.promote.promote) on the workspace's params: the production alias moves only
    if the gate passes (the registry decides). A refusal is a result, not a failure; anything else is an error."""
    from mlflow import MlflowClient

    from stages.promote import promote, report

    log = get_run_logger()
    path = Path(ws) / "params.yaml"
    if not path.is_file():  # as `videorft promote`: a missing file must not promote on defaults
        raise wsp.StageError("promote", "promote", f"params file {path} not found")
    params = load_params(path)
    name = params.register.model_name
    try:
        decision = promote(MlflowClient(tracking_uri), name, params.promote, by=by)
    except Exception as e:  # no version to judge, the lock held too long, the registry failing: a fault
        raise wsp.StageError("promote", "promote", f"{type(e).__name__}: {e}") from e
    for line in report(decision, name, params.promote.to_alias):
        log.info(line)
    refused = decision["decision"] == "refused"
    if refused:
        log.warning("promotion refused by the gate: production stays where it was")
    return {"stage": "promote", "ran": True, "promoted": not refused, "decision": decision["decision"],
            "version": decision["version"]}


def _stop_children(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed: cancel the train-stage runs this run started (their workers kill their
    process groups, training included) and mark its MLflow runs KILLED."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterState
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]),
            state=FlowRunFilterState(type={"any_": ["PENDING", "RUNNING", "SCHEDULED", "PAUSED"]})))
        for child in children:
            client.set_flow_run_state(child.id, Cancelling(message=f"parent {flow_run.name} {state.name}"),
                                      force=True)
    try:
        uri, _ = resolve_tracking(flow_run.parameters.get("workspace", "."))
        kill_open_runs(uri, str(flow_run.id))
    except Exception as e:  # tracking down: the runs stay RUNNING, tagged with this flow run id
        print(f"retrain: could not mark MLflow runs of {flow_run.id} killed: {e}", file=sys.stderr)


def plan(order: list[str], stages: list[str] | None, on_gpu: bool) -> list[list[str]]:
    """The stages to run, in pipeline order, as steps: consecutive GPU stages form one step when `on_gpu`."""
    unknown = [s for s in stages or [] if s not in order]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; dvc.yaml has {order}")
    steps: list[list[str]] = []
    for stage in (s for s in order if not stages or s in stages):
        if on_gpu and stage in GPU_STAGES and steps and steps[-1][-1] in GPU_STAGES:
            steps[-1].append(stage)
        else:
            steps.append([stage])
    return steps


@flow(name="retrain", on_cancellation=[_stop_children], on_crashed=[_stop_children])
def retrain(stages: list[str] | None = None, force: bool = False, train_deployment: str | None = None,
            train_timeout_s: float | None = None, gpus: int = 1, promote: bool = True,
            workspace: str = ".") -> dict:
    """The DVC pipeline of `workspace`, training on the GPU pool, then `videorft promote` after register."""
    log = get_run_logger()
    ws = Path(workspace).resolve()
    deployment = train_deployment or os.environ.get(TRAIN_DEPLOYMENT) or None
    steps = plan(wsp.stage_names(ws), stages, on_gpu=deployment is not None)
    todo = [s for step in steps for s in step]
    with wsp.workspace_lock(ws, log.info, owner=str(current_flow_run.id)):
        remote = wsp.configure_remote_from_env(ws) is not None
        flow_run_id, commit = str(current_flow_run.id), lineage.git_commit(ws)
        runs = FlowRuns(*resolve_tracking(ws), flow_run_id, commit)
        parent = runs.start_parent(f"retrain-{current_flow_run.name}", {
            "prefect.flow_run_name": current_flow_run.name, "prefect.deployment": current_deployment.name or "none",
            "train_deployment": deployment or "in-process", "dvc_remote": remote, "stages": ",".join(todo)})
        log.info(f"MLflow parent run {parent} ({runs.uri}, experiment {runs.experiment}); stages {todo}; "
                 f"training on {deployment or 'this machine'}; DVC remote {'on' if remote else 'off (local)'}")
        run = RetrainRun(ws, remote, force, runs, parent, flow_run_id, commit)
        done: dict[str, dict] = {}
        try:
            for step in steps:
                if deployment and step[0] in GPU_STAGES:
                    outcomes = run.run_on_gpu(step, deployment, train_timeout_s, gpus)
                else:
                    outcomes = {step[0]: run.run_here(step[0])}
                done.update({s: {"ran": o["ran"], "seconds": o["seconds"]} for s, o in outcomes.items()})
            if promote and "register" in todo:
                done["promote"] = {"ran": True, "promoted": run.promote()["promoted"]}
        except Exception as e:
            runs.end_parent("FAILED", {"error": str(e)[-4000:]})
            raise
        except BaseException:  # cancelled or terminated: the on_cancellation hook stops what it started
            runs.end_parent("KILLED")
            raise
        lock = ws / "dvc.lock"
        runs.end_parent("FINISHED", {"dvc_lock_sha256": sha256_file(lock) if lock.exists() else "none"})
    return {"mlflow_parent_run_id": parent, "flow_run_id": flow_run_id, "git_commit": commit, "stages": done}
