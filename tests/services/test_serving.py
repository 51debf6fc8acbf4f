"""The registered model as its users load and serve it: register the shipped tiny base into a SQLite-backed
registry (tmp), `mlflow.pyfunc.load_model("models:/<name>/<version>")` answers task prompts about a synthetic video,
and `mlflow models serve --env-manager local` answers a temporal-grounding question POSTed to /invocations."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from infra.devstack import free_port
from stages import evaluate, register, serving
from stages.datasets.synthetic import synthesize
from stages.params import MlflowParams, RegisterParams, load_params

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "pretrained" / "tiny-qwen2_5_vl"
TG = re.compile(r"<answer>\s*\d+(\.\d+)? to \d+(\.\d+)?\s*</answer>")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """One synthetic video of the demo's kind (params.yaml's synthesize section) and its tg annotation."""
    out = tmp_path_factory.mktemp("syn")
    p = load_params(ROOT / "params.yaml").synthesize.model_copy(
        update={"out_dir": str(out), "num_videos": 1, "num_tracking_sequences": 1})
    synthesize(p)
    ann = json.loads((out / "annotations" / "charades_sta.json").read_text())["syn00001"]
    mcq = json.loads((out / "annotations" / "mcq.json").read_text())[0]
    got = json.loads((out / "annotations" / "got10k.json").read_text())[0]
    return {"path": str(out / "videos" / "syn00001.mp4"), "sentence": ann["sentences"][0], "mcq": mcq,
            "track": {"path": str(out / got["path"]), "object": got["object"], "init_box": got["gt"][0]}}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """The shipped tiny base registered as a candidate (params.yaml's frame budget and prompts) in SQLite."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("serving-tests", artifact_location=str(tmp / "artifacts"))
    run = client.create_run(exp_id, run_name="train-0")
    client.set_terminated(run.info.run_id)
    model_dir = tmp / "run"
    import shutil

    shutil.copytree(BASE, model_dir)
    (model_dir / "train_summary.json").write_text(json.dumps({
        "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": exp_id, "base_model": str(BASE), "steps": 0,
        "samples": 0}))
    metrics = {"tg": {"mIoU": 0.3, "count": 1}}
    eval_path = tmp / "eval" / "eval.json"
    eval_path.parent.mkdir()
    eval_path.write_text(json.dumps({"candidate": {"model": str(model_dir), "metrics": metrics},
                                     "baseline": {"model": str(BASE), "metrics": metrics}, "samples": 1,
                                     "intervals": {"tg": {"mIoU": {"delta": 0.0, "lo": 0.0, "hi": 0.0}}}}))
    params = load_params(ROOT / "params.yaml")
    samples = tmp / "samples" / "eval.jsonl"
    samples.parent.mkdir()
    samples.write_text(json.dumps({"id": "tg-0", "task": "tg"}) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:  # evaluate's own run of this training run, which register links to the logged model
            eval_run_id = evaluate.evaluation_run(client, run.info.run_id, json.loads(eval_path.read_text()), [], [],
                                                  str(samples))
        finally:
            mlflow.set_tracking_uri(None)
        rec = register.run(RegisterParams(model_name="served", out=str(tmp / "register.json")),
                           MlflowParams(tracking_uri=uri), str(model_dir), str(eval_path), params=params,
                           lock_path=str(tmp / "dvc.lock"), repo=ROOT)
    return {"uri": uri, "model": f"models:/served/{rec['version']}", "tmp": tmp, "params": params,
            "version": rec["version"], "eval_run_id": eval_run_id}


def test_the_evaluation_run_is_linked_to_the_registered_model(registered):
    client = MlflowClient(registered["uri"])
    version = client.get_model_version("served", registered["version"])
    assert version.tags["eval_run_id"] == registered["eval_run_id"]
    model_id = version.source.removeprefix("models:/")
    ev = client.get_run(registered["eval_run_id"])
    assert [m.model_id for m in ev.inputs.model_inputs] == [model_id]  # the model is the evaluation's input
    (metric,) = [m for m in client.get_logged_model(model_id).metrics if m.key == "eval/candidate/tg/mIoU"]
    assert metric.value == 0.3 and metric.run_id == ev.info.run_id
    assert (metric.dataset_name, metric.dataset_digest) == (ev.inputs.dataset_inputs[0].dataset.name,
                                                            ev.inputs.dataset_inputs[0].dataset.digest)


def test_registered_model_loads_as_pyfunc_and_answers_every_task(registered, video, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    info = mlflow.models.get_model_info(registered["model"])
    assert "python_function" in info.flavors and info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs][:3] == ["task", "video", "video_b64"]
    model = mlflow.pyfunc.load_model(registered["model"])
    import base64

    mcq = video["mcq"]
    out = model.predict(pd.DataFrame([
        {"task": "tg", "video": video["path"], "sentence": video["sentence"]},
        {"task": "qa", "video_b64": base64.b64encode(Path(video["path"]).read_bytes()).decode(),
         "question": mcq["question"], "options": json.dumps(mcq["options"])},
        {"task": "tracking", "video": video["track"]["path"], "object": video["track"]["object"],
         "init_box": json.dumps(video["track"]["init_box"])},
        {"task": "tg", "video": str(registered["tmp"] / "absent.mp4"), "sentence": "x"},
    ])).to_dict(orient="records")
    tg, qa, track, absent = out
    budget = registered["params"].extract_frames
    assert TG.search(tg["answer"]) and json.loads(tg["parsed"])[0] <= json.loads(tg["parsed"])[1]
    assert tg["num_frames"] == budget.max_frames and not isinstance(tg["error"], str)  # params.yaml's budget
    assert json.loads(qa["parsed"]) in list("ABCD")
    assert track["num_frames"] == budget.tracking_frames and len(json.loads(track["parsed"])) == budget.tracking_frames
    assert "not found where the model runs" in absent["error"] and absent["answer"] == ""  # the others answered


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def test_mlflow_models_serve_answers_a_temporal_grounding_question(registered, video):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"],
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(registered["tmp"] / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered["model"], "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (registered["tmp"] / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, (registered["tmp"] / "serve.log").read_text()[-3000:]
            time.sleep(1)
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [
            {"task": "tg", "video": video["path"], "sentence": video["sentence"]}]})
        (row,) = answer["predictions"]
        assert TG.search(row["answer"]), row
        start, end = json.loads(row["parsed"])
        assert 0 <= start <= end, row
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started (its own session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_model_folder_without_pyfunc_files_gets_them_beside_its_checkpoint(tmp_path):
    """add_pyfunc puts the pyfunc files beside the model's own and never overwrites one (a second call refuses)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    serving.add_pyfunc(tmp_path / "m", {"x": 1})
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"MLmodel", "serving_model.py", "serving.json", "config.json", "requirements.txt"} <= names
    assert json.loads((tmp_path / "m" / "serving.json").read_text()) == {"x": 1}
    with pytest.raises(FileExistsError, match="would overwrite the model's own file"):
        serving.add_pyfunc(tmp_path / "m", {"x": 1})
