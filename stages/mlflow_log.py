"""MLflow wiring shared by train, evaluate, register and promote. The tracking URI comes from MLFLOW_TRACKING_URI
when set (a server, Postgres-backed in production), else from params (SQLite file for the embedded default).

A server that is down must fail fast with a message naming it: MLflow's own defaults retry 7 times with
exponential backoff and wait 120 s per request (minutes of silence), so `setup` bounds both unless the user set
them, and `require_reachable` asks the server's /health once before any work starts.
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

from stages.params import MlflowParams

_BAD = re.compile(r"[^0-9A-Za-z_\-. /:]")

# Bounded client behaviour (seconds / attempts); an explicit environment value wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# The experiment kind tag `mlflow.experimentKind` (values: the UI's ExperimentKind enum, MLflow 3.17,
# mlflow/server/js; "custom_model_development" is what the UI writes when a user picks "Machine learning") sets the
# experiment's side navigation. Which view a browser opens is a separate per-browser setting (workflowType, default
# GenAI): the user picks "Model training" once, or the URL carries ?workflowType=machine_learning
# (docs/operations.md). MLflow's Python package has no constant for either.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached; the message names its URI."""


def tracking_uri(p: MlflowParams) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or p.tracking_uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def require_reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise TrackingUnavailable unless an HTTP tracking server answers /health (other stores: nothing to ask)."""
    if not is_http(uri):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as e:
        reason = str(getattr(e, "reason", e))
    raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({reason}); start it or set "
                              f"MLFLOW_TRACKING_URI, then retry")


def ensure_experiment(client, name: str) -> str:
    """The id of experiment `name`, created if missing, with the model-training kind tag unless the experiment
    already names a kind (a user's choice in the UI stays)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as e:  # another process created it first
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "active" and EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def setup(p: MlflowParams, experiment: bool = True) -> str:
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(p)
    mlflow.set_tracking_uri(uri)
    if experiment:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or p.experiment
        mlflow.set_experiment(experiment_id=ensure_experiment(mlflow.MlflowClient(uri), name))
    return uri


def metric_name(name: str) -> str:
    """MLflow accepts a limited alphabet in metric names."""
    return _BAD.sub("_", name)


def finite_metrics(logs: dict) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[metric_name(k)] = float(v)
    return out
