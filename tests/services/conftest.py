"""Real services for the registry tests, started once per session on 127.0.0.1 (infra/devstack.py):
an MLflow server on SQLite, and an MLflow server on a private PostgreSQL cluster with artifacts on an
S3-compatible server (moto over HTTP).

PostgreSQL missing: as root (CI, which can apt-get install postgresql) the postgres tests FAIL; only a non-root
developer without the Debian binaries gets a skip, with the reason in the summary (`pytest -rs`).
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from infra.devstack import MlflowServer, S3Server
from tests.stack_helpers import postgres_or_fail

BACKENDS = ["sqlite", "postgres_s3"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/services/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def services_root():
    # not pytest's tmp_path: that is 0700 and the postgres user could not reach a cluster inside it
    root = Path(tempfile.mkdtemp(prefix="videorft-services-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_sqlite(services_root):
    server = MlflowServer(services_root / "mlflow-sqlite", workers=1).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_postgres_s3(services_root):
    pg = postgres_or_fail(services_root / "pg")
    s3 = S3Server(services_root / "s3").start()
    server = MlflowServer(services_root / "mlflow-pg", pg.create_database("mlflow"), "s3://mlflow/artifacts",
                          env=s3.env(), workers=1)
    server.s3 = s3  # the tests look into the bucket
    try:
        server.start()
        yield server
    finally:
        server.stop()
        s3.stop()
        pg.stop()


@pytest.fixture(params=BACKENDS)
def mlflow_server(request, monkeypatch) -> MlflowServer:
    """Each registry test runs against both servers; MLFLOW_TRACKING_URI points the stages at it."""
    server = request.getfixturevalue("mlflow_sqlite" if request.param == "sqlite" else "mlflow_postgres_s3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    return server


def _metrics(tg=0.3, gqa_iou=0.3, gqa_acc=0.5, ao=0.3, qa=0.5) -> dict:
    """An evaluation's per-task metric table (the shape stages/evaluate.py writes), from headline numbers."""
    return {"tg": {"mIoU": tg, "R@0.5": tg, "count": 3},
            "gqa": {"evidence_mIoU": gqa_iou, "accuracy": gqa_acc, "Acc@GQA": gqa_acc / 2, "count": 3},
            "tracking": {"AO": ao, "SR@0.5": ao, "count": 3}, "qa": {"accuracy": qa, "count": 3}}


@pytest.fixture
def metrics():
    return _metrics


@pytest.fixture
def make_candidate(tiny_model_dir, tmp_path, mlflow_server):
    """A trained-model folder (the tiny model + a train_summary of a real run on the server) and an eval.json
    with the given candidate/base metrics: the inputs the register stage reads. With `samples` (an
    eval_samples.json table, tests/eval_tables.py), evaluate's per-sample rows and intervals come along; without,
    the evaluation is one from before the gate used intervals."""
    from mlflow import MlflowClient

    from stages.evaluate import EVAL_SAMPLES, intervals
    from stages.params import EvaluateParams

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("registry-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("registry-tests")
    counter = iter(range(1000))

    def make(candidate: dict, baseline: dict, samples: dict | None = None) -> tuple[str, str, str]:
        n = next(counter)
        run = client.create_run(exp_id, run_name=f"train-{n}")
        client.set_terminated(run.info.run_id)
        model_dir = tmp_path / f"run{n}"
        shutil.copytree(tiny_model_dir, model_dir)
        (model_dir / "train_summary.json").write_text(json.dumps({
            "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": exp_id, "base_model": "tiny-base",
            "steps": 3, "samples": 12, "samples_per_task": {"tg": 3, "gqa": 3, "tracking": 3, "qa": 3}}))
        eval_path = tmp_path / f"eval{n}" / "eval.json"  # its own folder: eval_samples.json goes beside it
        eval_path.parent.mkdir()
        result = {
            "candidate": {"model": str(model_dir), "model_sha256": f"sha-{n}", "metrics": candidate},
            "baseline": {"model": "tiny-base", "metrics": baseline},
            "samples": 12, "samples_per_task": {"tg": 3, "gqa": 3, "tracking": 3, "qa": 3},
            "inputs_sha256": "inputs-sha", "general": {}}
        if samples is not None:
            p = EvaluateParams()
            result.update(inputs_sha256=samples["inputs_sha256"], intervals=intervals(samples, p), interval={
                "method": "paired bootstrap, percentile", "level": p.interval_level,
                "resamples": p.bootstrap_resamples, "seed": p.bootstrap_seed})
            (eval_path.parent / EVAL_SAMPLES).write_text(json.dumps(samples))
        eval_path.write_text(json.dumps(result))
        return str(model_dir), str(eval_path), run.info.run_id

    return make
