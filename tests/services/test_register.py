"""The register stage against real MLflow servers (SQLite; PostgreSQL + S3 artifacts): one version per
training run however often it runs, a logged model holding checkpoint + processor + prompts + model card +
the evaluation's per-sample rows, lineage and interval tags, and recovery from an interrupted attempt and from a
server that was down."""
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from stages import model_card, register
from stages.params import MlflowParams, Params, RegisterParams
from stages.tasks import PROMPT_DIR
from tests.eval_tables import base_values, samples, shifted

ROOT = Path(__file__).resolve().parents[2]


def reg_params(tmp_path, name):
    return RegisterParams(model_name=name, out=str(tmp_path / "register.json"))


def versions_of(client, name, run_id):
    return [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("train_run_id") == run_id]


def test_register_twice_makes_one_version_with_lineage_and_artifacts(mlflow_server, make_candidate, metrics, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:8]}"
    base = base_values(n=8)
    table = samples(shifted(base, tg=0.1), base)
    model_dir, eval_path, run_id = make_candidate(metrics(tg=0.4), metrics(tg=0.1), table)
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "extract_frames": {"outs": [{"path": "data/frames", "md5": "f" * 32 + ".dir"}]},
        "build_samples": {"outs": [{"path": "data/samples", "md5": "a" * 32 + ".dir"}]}}}))
    p = reg_params(tmp_path, name)
    first = register.run(p, MlflowParams(), model_dir, eval_path, params=Params(), lock_path=str(lock), repo=ROOT)
    second = register.run(p, MlflowParams(), model_dir, eval_path, params=Params(), lock_path=str(lock), repo=ROOT)
    assert (first["reused"], second["reused"]) == (False, True)
    assert first["version"] == second["version"]

    client = MlflowClient(mlflow_server.uri)
    assert len(versions_of(client, name, run_id)) == 1
    v = client.get_model_version_by_alias(name, "staging")
    assert str(v.version) == first["version"]
    t = v.tags
    assert t["train_run_id"] == run_id and t["base_model"] == "tiny-base"
    assert t["dvc.data/frames"] == "f" * 32 + ".dir" and t["dvc.data/samples"] == "a" * 32 + ".dir"
    assert len(t["params_sha256"]) == 64 and len(t["git_commit"].split("-")[0]) == 40
    assert t["metric.tg.mIoU"] == "0.4" and t["metric.qa.accuracy"] == "0.5"  # headline metrics only: lineage
    assert not any(k.startswith("baseline") or k in ("metrics", "metric.tg.R_0.5") for k in t) and len(t) <= 16
    samples_file = Path(eval_path).parent / "eval_samples.json"
    assert t["eval_samples_sha256"] == hashlib.sha256(samples_file.read_bytes()).hexdigest()
    shown = json.loads(t["intervals"])
    assert shown["tg.mIoU"] == [0.1, 0.1, 0.1] and shown["level"] == 0.95 and len(t["intervals"]) < 4000

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{v.version}", dst_path=str(tmp_path / "dl")))
    assert (local / "model.safetensors").stat().st_size == (Path(model_dir) / "model.safetensors").stat().st_size
    assert (local / "tokenizer.json").exists() and (local / "processor_config.json").exists()
    assert sorted(f.name for f in (local / "prompts").iterdir()) == sorted(f.name for f in PROMPT_DIR.glob("*.txt"))
    card = (local / "MODEL_CARD.md").read_text()
    assert run_id in card and "| tg | mIoU | 0.4000 | 0.1000 | 0.3000 | +0.1000 [+0.1000, +0.1000] |" in card
    assert "a" * 32 in card and "95% percentile intervals" in card
    assert v.description == model_card.description(card) and v.description.startswith(f"# {name}\n")
    assert "| tg | mIoU | 0.4000 |" in v.description
    assert (local / "eval_samples.json").read_bytes() == samples_file.read_bytes()
    s3 = getattr(mlflow_server, "s3", None)
    if s3 is not None:  # the PostgreSQL server keeps artifacts in the S3 bucket, not on a local disk
        import boto3

        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3.endpoint, **_creds(s3)).list_objects_v2(
            Bucket="mlflow", MaxKeys=1000).get("Contents", [])]
        model_id = v.source.removeprefix("models:/")
        assert any(k.endswith(f"{model_id}/artifacts/model.safetensors") for k in keys), keys[:20]

    # a re-evaluation of the same training run refreshes the version's metric tags, description and the per-sample
    # rows in its model (the gate reads them from there), still one version; metric tags of an older register go
    client.set_model_version_tag(name, v.version, "baseline.tg.mIoU", "0.1")
    client.set_model_version_tag(name, v.version, "metric.tg.R_0.5", "0.4")
    client.update_model_version(name, v.version, description="x" * model_card.DESCRIPTION_MAX)  # the most it holds
    Path(eval_path).write_text(Path(eval_path).read_text().replace('"mIoU": 0.4', '"mIoU": 0.45'))
    samples_file.write_text(json.dumps(samples(shifted(base, tg=0.2), base)))
    third = register.run(p, MlflowParams(), model_dir, eval_path, params=Params(), lock_path=str(lock), repo=ROOT)
    assert third["version"] == first["version"] and len(versions_of(client, name, run_id)) == 1
    refreshed = client.get_model_version(name, first["version"])
    t = refreshed.tags
    assert t["metric.tg.mIoU"] == "0.45" and "baseline.tg.mIoU" not in t and "metric.tg.R_0.5" not in t
    assert "| tg | mIoU | 0.4500 |" in refreshed.description
    assert t["eval_samples_sha256"] == hashlib.sha256(samples_file.read_bytes()).hexdigest()
    again = mlflow.artifacts.download_artifacts(f"models:/{name}/{v.version}/eval_samples.json",
                                                dst_path=str(tmp_path / "dl2"))
    assert Path(again).read_bytes() == samples_file.read_bytes()


def _creds(s3):
    env = s3.env()
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def test_interrupted_attempt_is_completed_by_the_retry(mlflow_server, make_candidate, metrics, tmp_path):
    """What a register killed mid-upload leaves (a PENDING logged model with part of the files) and a FAILED
    attempt: the retry resumes the PENDING one, deletes the FAILED one, and makes exactly one version."""
    name = f"reg-{uuid.uuid4().hex[:8]}"
    model_dir, eval_path, run_id = make_candidate(metrics(), metrics(tg=0.0))
    exp_id = MlflowClient(mlflow_server.uri).get_run(run_id).info.experiment_id
    mlflow.set_tracking_uri(mlflow_server.uri)
    client = MlflowClient(mlflow_server.uri)
    failed = mlflow.initialize_logged_model(name=name, source_run_id=run_id, tags={"train_run_id": run_id},
                                            experiment_id=exp_id)
    client.finalize_logged_model(failed.model_id, "FAILED")
    pending = mlflow.initialize_logged_model(name=name, source_run_id=run_id, tags={"train_run_id": run_id},
                                             experiment_id=exp_id)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((Path(model_dir) / "config.json").read_text())
    client.log_model_artifacts(pending.model_id, str(partial))

    rec = register.run(reg_params(tmp_path, name), MlflowParams(), model_dir, eval_path, params=Params())
    versions = versions_of(client, name, run_id)
    assert len(versions) == 1 and rec["source"] == f"models:/{pending.model_id}"
    assert client.get_logged_model(pending.model_id).status == LoggedModelStatus.READY
    left = client.search_logged_models(experiment_ids=[exp_id], filter_string=f"tags.train_run_id = '{run_id}'")
    assert [m.model_id for m in left] == [pending.model_id]  # the FAILED attempt is gone
    files = {a.path for a in client.list_logged_model_artifacts(pending.model_id)}
    assert {"model.safetensors", "MODEL_CARD.md", "prompts"} <= files


def stage_command(tmp_path, server, name, model_dir, eval_path):
    """`python -m stages.register` as DVC runs it: in a folder with a params.yaml, the server from the env."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "train": {"out_dir": model_dir}, "evaluate": {"out_dir": str(Path(eval_path).parent)},
        "register": {"model_name": name, "out": str(tmp_path / "register.json")}}))
    Path(eval_path).rename(Path(eval_path).parent / "eval.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": server.uri}
    return [sys.executable, "-m", "stages.register"], {"cwd": tmp_path, "env": env, "text": True}


def test_server_down_fails_clearly_then_retry_registers_once(mlflow_server, make_candidate, metrics, tmp_path):
    """The stage against a stopped server exits non-zero at once naming the URI; once the server is back, the
    same command registers exactly one version."""
    name = f"reg-{uuid.uuid4().hex[:8]}"
    model_dir, eval_path, run_id = make_candidate(metrics(), metrics())
    cmd, kw = stage_command(tmp_path, mlflow_server, name, model_dir, eval_path)

    mlflow_server.stop()
    try:
        down = subprocess.run(cmd, capture_output=True, timeout=120, **kw)
    finally:
        mlflow_server.start()
    assert down.returncode != 0
    assert f"MLflow tracking server {mlflow_server.uri} is unreachable" in down.stderr
    assert "Traceback" not in down.stderr

    up = subprocess.run(cmd, capture_output=True, timeout=300, **kw)
    assert up.returncode == 0, up.stderr[-3000:]
    again = subprocess.run(cmd, capture_output=True, timeout=300, **kw)
    assert again.returncode == 0 and "already registered" in again.stdout
    assert len(versions_of(MlflowClient(mlflow_server.uri), name, run_id)) == 1


def test_two_concurrent_registers_of_one_run_leave_one_version(mlflow_server, make_candidate, metrics, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:8]}"
    model_dir, eval_path, run_id = make_candidate(metrics(), metrics())
    cmd, kw = stage_command(tmp_path, mlflow_server, name, model_dir, eval_path)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[1][-5000:] for o in outs)
    client = MlflowClient(mlflow_server.uri)
    versions = versions_of(client, name, run_id)
    assert len(versions) == 1
    assert client.get_model_version_by_alias(name, "staging").version == versions[0].version
