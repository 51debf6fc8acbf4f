"""What a user of the MLflow UI sees of the project's runs, with a real MLflow store (SQLite in a tmp dir): the
experiments open in the model-training view (experiment kind tag)."""
from mlflow import MlflowClient

from flows.mlflow_runs import FlowRuns
from stages import tracking
from stages.params import MlflowParams


def test_experiments_are_tagged_as_model_training_once_and_a_chosen_kind_stays(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
