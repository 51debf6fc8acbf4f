"""All five tasks through the whole pipeline, the fifth (stvg, spatio-temporal video grounding) turned on by
params.yaml alone: `dvc repro` on a tiny workspace synthesizes its videos, samples them, trains all five jointly,
evaluates and registers; `videorft score` scores stvg outputs from the samples file; the promotion gate judges an
stvg key. The demo keeps stvg off (docs/tasks.md, "Add a task")."""
import json
import sys

import pytest
from tests.pipeline.conftest import TINY, make_workspace, sh, workspace_env

pytestmark = pytest.mark.slow

FIVE = ("tg", "gqa", "tracking", "qa", "stvg")


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    tiny = {section: dict(values) for section, values in TINY.items()}
    tiny["synthesize"]["tasks"] = {"stvg": {"num_videos": 8}}
    tiny["build_samples"] = {"annotations": {
        "tg": "data/synthetic/annotations/charades_sta.json",
        "gqa": "data/synthetic/annotations/nextgqa.json",
        "tracking": "data/synthetic/annotations/got10k.json",
        "qa": "data/synthetic/annotations/mcq.json",
        "stvg": "data/synthetic/annotations/hcstvg.json",
    }}
    tiny["train"] = {**tiny["train"], "tasks": list(FIVE)}
    tiny["promote"] = {"improve": {"tg.mIoU": 0.0, "stvg.m_vIoU": 0.0}}
    ws = make_workspace(tmp_path_factory.mktemp("five"), tiny)
    env = workspace_env(ws)
    repro = sh([sys.executable, "-m", "dvc", "repro"], ws, env)
    return ws, env, repro


def test_five_tasks_sample_train_evaluate_and_register(five):
    ws, env, _ = five
    from mlflow import MlflowClient

    from stages.io import read_json, read_jsonl

    rows = read_jsonl(ws / "data/samples/train.jsonl") + read_jsonl(ws / "data/samples/eval.jsonl")
    stvg = [r for r in rows if r["task"] == "stvg"]
    assert stvg and {r["task"] for r in rows} == set(FIVE)
    # bound to the frames the model sees: one gold box slot per sampled frame, their times listed in the prompt
    assert all(len(r["solution"]["boxes"]) == len(r["problem"]["frame_times"]) for r in stvg)
    assert all(f"{r['problem']['frame_times'][0]:.2f}" in r["prompt"] for r in stvg)
    evals = read_json(ws / "metrics/eval.json")
    assert set(evals["candidate"]["metrics"]) == set(FIVE)
    assert {"m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5"} <= set(evals["candidate"]["metrics"]["stvg"])
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    reg = read_json(ws / "metrics/register.json")
    version = client.get_model_version_by_alias(reg["model_name"], reg["alias"])
    run = client.get_run(version.tags["train_run_id"])
    assert "eval/candidate/stvg/m_vIoU" in run.data.metrics
    assert any(m.startswith("rewards/stvg_viou") for m in run.data.metrics), sorted(run.data.metrics)


def test_score_cli_scores_stvg_from_the_samples_file(five):
    ws, env, _ = five
    from stages.io import read_jsonl
    from stages.tasks import target_text

    rows = [r for r in read_jsonl(ws / "data/samples/eval.jsonl") if r["task"] == "stvg"]
    preds = ws / "stvg-preds.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "output": target_text("stvg", r["solution"], False)}) + "\n"
                             for r in rows))
    out = sh([sys.executable, "-m", "videorft", "score", "--task", "stvg", "--annotations", "data/samples/eval.jsonl",
              "--predictions", str(preds), "--no-think"], ws, env)
    report = json.loads(out.stdout)
    assert report["metrics"]["count"] == len(rows) and report["metrics"]["m_vIoU"] == 1.0
    raw = sh([sys.executable, "-m", "videorft", "score", "--task", "stvg", "--annotations",
              "data/synthetic/annotations/hcstvg.json", "--predictions", str(preds)], ws, env)
    assert "bind_frames was not applied" in raw.stdout  # the raw file cannot say which frames the model saw


def test_promotion_gate_judges_the_stvg_key(five):
    ws, env, _ = five
    out = sh([sys.executable, "-m", "videorft", "promote"], ws, env, check=False)
    assert "stvg.m_vIoU" in out.stdout + out.stderr, out.stdout + out.stderr
