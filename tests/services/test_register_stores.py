"""A register that is up to date for one registry (the demo's SQLite) must still register into another (the stack's
server) when MLFLOW_TRACKING_URI names it: DVC cannot see the variable, so the flow asks the target registry
(`register.missing_in`) and forces register, and register copes with a training run that lives in the other store.
Two SQLite stores in a temporary folder stand for the two registries."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow import MlflowClient

from flows.retrain import RetrainRun, register_missing
from stages import register
from stages.params import MlflowParams, RegisterParams, load_params

ROOT = Path(__file__).resolve().parents[2]


def test_a_version_registered_into_another_store_is_registered_into_this_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a store's default artifact root (./mlruns) lands in the temporary folder
    demo, stack = f"sqlite:///{tmp_path}/demo.db", f"sqlite:///{tmp_path}/stack.db"
    demo_client = MlflowClient(demo)
    exp_id = demo_client.create_experiment("videorft", artifact_location=str(tmp_path / "demo-artifacts"))
    run = demo_client.create_run(exp_id, run_name="train-demo")
    demo_client.set_terminated(run.info.run_id)
    model_dir = tmp_path / "models" / "run"
    shutil.copytree(ROOT / "pretrained" / "tiny-qwen2_5_vl", model_dir)
    (model_dir / "train_summary.json").write_text(json.dumps({
        "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": exp_id, "base_model": "tiny", "steps": 0}))
    metrics = {"tg": {"mIoU": 0.3, "count": 1}}
    eval_path = tmp_path / "metrics" / "eval.json"
    eval_path.parent.mkdir()
    eval_path.write_text(json.dumps({"candidate": {"metrics": metrics}, "baseline": {"metrics": metrics}}))
    out = tmp_path / "metrics" / "register.json"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"register": {"model_name": "m", "out": str(out)}}))
    p, params = RegisterParams(model_name="m", out=str(out)), load_params(ROOT / "params.yaml")

    def register_into(uri):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        MlflowClient(uri).search_experiments()  # creates the store's tables and its Default experiment
        return register.run(p, MlflowParams(), str(model_dir), str(eval_path), params=params,
                            lock_path=str(tmp_path / "dvc.lock"), repo=ROOT)

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "videorft")
    first = register_into(demo)
    assert register.missing_in(out, demo) is None and register_missing(tmp_path, demo) is None
    why = register_missing(tmp_path, stack)  # what the flow asks before `dvc repro register`
    assert why and stack in why and run.info.run_id in why and demo in why
    flow_run = RetrainRun(tmp_path, False, False, SimpleNamespace(uri=stack), "parent", "flow-run", "commit")
    assert flow_run._register_missing() == why  # run_here forces `dvc repro register` on it

    capsys.readouterr()
    MlflowClient(stack).create_experiment("other", artifact_location=str(tmp_path / "stack-other"))
    second = register_into(stack)  # the training run is not in this store
    assert "is not in this tracking store" in capsys.readouterr().out
    client = MlflowClient(stack)
    v = client.get_model_version_by_alias("m", "staging")
    assert str(v.version) == second["version"] == "1" and v.tags["train_run_id"] == run.info.run_id
    model = client.get_logged_model(v.source.removeprefix("models:/"))
    assert model.source_run_id is None and client.get_experiment(model.experiment_id).name == "videorft"
    assert first["tracking_uri"] == demo and second["tracking_uri"] == stack
    assert register.missing_in(out, stack) is None
    assert register_into(stack)["reused"] is True and len(client.search_model_versions("name = 'm'")) == 1


def test_no_record_or_a_record_without_a_run_asks_nothing(tmp_path):
    assert register.missing_in(tmp_path / "absent.json", "sqlite:///unused.db") is None  # DVC runs register anyway
    (tmp_path / "r.json").write_text("{}")
    assert register.missing_in(tmp_path / "r.json", "sqlite:///unused.db") is None
