"""MLflow wiring shared by train, evaluate and register. The tracking URI comes from MLFLOW_TRACKING_URI when set
(a server, Postgres-backed in production), else from params (SQLite file for the embedded default)."""
from __future__ import annotations

import os
import re

from stages.params import MlflowParams

_BAD = re.compile(r"[^0-9A-Za-z_\-. /:]")


def setup(p: MlflowParams) -> str:
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or p.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or p.experiment)
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
