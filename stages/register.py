"""Stage register: the trained checkpoint becomes an MLflow logged model (checkpoint + processor), a registered
model version tagged with its lineage and metrics, and an alias (default `staging`).

Idempotent per training run: a version whose `train_run_id` tag matches is reused, not duplicated.
"""
from __future__ import annotations

import os
import subprocess

from stages.io import read_json, sha256_file, write_json
from stages.params import MlflowParams, RegisterParams, load_params
from stages.tracking import metric_name


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lineage_tags(train_summary: dict, eval_result: dict, params_file: str = "params.yaml") -> dict[str, str]:
    tags = {
        "train_run_id": train_summary["mlflow_run_id"],
        "base_model": train_summary["base_model"],
        "git_commit": git_commit(),
        "params_sha256": sha256_file(params_file) if os.path.exists(params_file) else "none",
    }
    if os.path.exists("dvc.lock"):
        tags["dvc_lock_sha256"] = sha256_file("dvc.lock")
    for task, metrics in eval_result["candidate"]["metrics"].items():
        for k, v in metrics.items():
            tags[metric_name(f"metric.{task}.{k}")] = f"{v:.6g}" if isinstance(v, float) else str(v)
    return tags


def find_version(client, name: str, train_run_id: str):
    for v in client.search_model_versions(f"name = '{name}'"):
        if v.tags.get("train_run_id") == train_run_id:
            return v
    return None


def run(p: RegisterParams, mlflow_p: MlflowParams, model_dir: str, eval_path: str) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from stages.tracking import setup

    uri = setup(mlflow_p)
    client = MlflowClient()
    summary = read_json(os.path.join(model_dir, "train_summary.json"))
    tags = lineage_tags(summary, read_json(eval_path))
    version = find_version(client, p.model_name, summary["mlflow_run_id"])
    if version is None:
        logged = mlflow.initialize_logged_model(
            name=p.model_name, source_run_id=summary["mlflow_run_id"], tags=tags, model_type="video-mllm")
        try:
            client.log_model_artifacts(logged.model_id, model_dir)
            mlflow.finalize_logged_model(logged.model_id, "READY")
        except Exception:
            mlflow.finalize_logged_model(logged.model_id, "FAILED")
            raise
        version = mlflow.register_model(f"models:/{logged.model_id}", p.model_name, tags=tags)
    client.set_registered_model_alias(p.model_name, p.alias, version.version)
    record = {
        "model_name": p.model_name, "version": str(version.version), "alias": p.alias,
        "train_run_id": summary["mlflow_run_id"], "source": version.source, "tracking_uri": uri,
    }
    write_json(p.out, record)
    return record


def main() -> None:
    params = load_params()
    rec = run(params.register, params.mlflow, params.train.out_dir, os.path.join(params.evaluate.out_dir, "eval.json"))
    print(f"register: {rec['model_name']} version {rec['version']} -> alias '{rec['alias']}' (run {rec['train_run_id']})")


if __name__ == "__main__":
    main()
