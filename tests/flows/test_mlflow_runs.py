"""What a user of the MLflow UI sees of the project's runs, with a real MLflow store (SQLite in a tmp dir): the
experiments open in the model-training view (experiment kind tag); training runs are named after what ran."""
import mlflow
from mlflow import MlflowClient

from flows.mlflow_runs import FlowRuns
from stages import tracking
from stages.params import MlflowParams, ModelParams, TrainParams
from stages.train import mlflow_run, run_name


def _store(tmp_path, monkeypatch) -> str:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_experiments_are_tagged_as_model_training_once_and_a_chosen_kind_stays(tmp_path, monkeypatch):
    uri = _store(tmp_path, monkeypatch)
    client = MlflowClient(uri)
    kind = tracking.EXPERIMENT_KIND_TAG

    tracking.setup(MlflowParams(tracking_uri=uri, experiment="fresh"))  # created by the stage
    assert client.get_experiment_by_name("fresh").tags[kind] == "custom_model_development"
    old = client.create_experiment("old")  # made before the tag existed
    tracking.setup(MlflowParams(tracking_uri=uri, experiment="old"))
    tracking.setup(MlflowParams(tracking_uri=uri, experiment="old"))  # idempotent
    assert client.get_experiment(old).tags[kind] == "custom_model_development"

    FlowRuns(uri, "flow-made", flow_run_id="f", commit="c")  # created by a flow
    assert client.get_experiment_by_name("flow-made").tags[kind] == "custom_model_development"
    chosen = client.create_experiment("chosen", tags={kind: "genai_development"})  # a user's choice in the UI
    FlowRuns(uri, "chosen", flow_run_id="f", commit="c")
    tracking.setup(MlflowParams(tracking_uri=uri, experiment="chosen"))
    assert client.get_experiment(chosen).tags[kind] == "genai_development"


def test_training_runs_are_named_after_loss_tasks_model_and_fingerprint(tmp_path, monkeypatch):
    uri = _store(tmp_path, monkeypatch)
    name = run_name(TrainParams(tasks=["tg", "qa"], loss_type="dapo"), ModelParams(family="qwen3_vl"), "abcdef0123")
    assert name == "train-dapo-tg+qa-qwen3_vl-abcdef"
    mp, run_file = MlflowParams(tracking_uri=uri, experiment="names"), tmp_path / "mlflow_run.json"
    with mlflow_run(True, mp, run_file, False, name) as active:
        first = active.info.run_id
    with mlflow_run(True, mp, run_file, True, name) as active:  # resumed from a checkpoint: the same run
        assert active.info.run_id == first
    run = MlflowClient(uri).get_run(first)
    assert run.info.run_name == name and run.info.status == "FINISHED"
    assert mlflow.active_run() is None
