"""The evaluate stage on the tiny offline model: candidate and base on every task, the base model's
generations cached per (model content, inputs, decoding, code), the intervals of candidate - base, the QA
regression check, the blind line, predictions, per-sample rows, plots, and everything logged into the training
run."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from stages import eval_cache, evaluate
from stages import tasks as task_registry
from stages.io import read_json, read_jsonl, write_jsonl
from stages.params import EvaluateParams, MlflowParams, Params

PROBLEMS = {
    "tg": ({"duration": 8.0, "sentence": "the red square moves right"}, {"timestamps": [1.0, 4.0]}),
    "gqa": ({"duration": 8.0, "question": "what moves", "options": ["(A) square", "(B) circle"]},
            {"answer": "A", "glue": [[1.0, 4.0]]}),
    "tracking": ({"object": "red square", "init_box": [0.1, 0.1, 0.3, 0.3]},
                 {"boxes": [[0.1, 0.1, 0.3, 0.3]] * 8}),
    "qa": ({"question": "how many objects", "options": ["(A) 1", "(B) 2"]}, {"answer": "A"}),
}


@pytest.fixture
def samples(tmp_path, frame_files):
    rows = [{"id": f"{task}-{i}", "task": task, "frames": frame_files[i % len(frame_files)], "fps": 1.0,
             "prompt": task_registry.render_prompt(task, problem), "problem": problem, "solution": solution}
            for i, (task, (problem, solution)) in enumerate(PROBLEMS.items())]
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, rows)
    return path


def params(tmp_path, **kw):
    return EvaluateParams(max_new_tokens=6, batch_size=4, out_dir=str(tmp_path / "metrics"),
                          baseline_cache_dir=str(tmp_path / "cache"), **kw)


def test_base_generations_are_cached_and_equal_a_fresh_run(tiny_model_dir, samples, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_model_dir, candidate)  # same weights as the base: outputs must be identical
    p = params(tmp_path)
    first = evaluate.run(p, str(candidate), tiny_model_dir, str(samples), MlflowParams())
    assert first["baseline"]["cached"] is False
    second = evaluate.run(p, str(candidate), tiny_model_dir, str(samples), MlflowParams())
    assert second["baseline"]["cached"] is True and second["baseline"]["cache"] == first["baseline"]["cache"]

    preds = read_jsonl(tmp_path / "metrics" / "predictions.jsonl")
    by_model = {m: [r["output"] for r in preds if r["model"] == m] for m in ("candidate", "baseline")}
    assert len(by_model["candidate"]) == len(PROBLEMS) and by_model["baseline"] == by_model["candidate"]
    assert second["baseline"]["metrics"] == first["baseline"]["metrics"] == second["candidate"]["metrics"]
    assert set(second["candidate"]["metrics"]) == set(PROBLEMS)
    assert all(v == 0 for t in second["delta"].values() for v in t.values())
    g = second["general"]
    assert (g["task"], g["metric"], g["delta"], g["kept"]) == ("qa", "accuracy", 0.0, True)
    # same weights, same answers: every interval is [0, 0] and nothing was learned
    assert set(second["intervals"]) == set(PROBLEMS)
    assert all((iv["delta"], iv["lo"], iv["hi"], iv["n"]) == (0.0, 0.0, 0.0, 1)
               for t in second["intervals"].values() for iv in t.values())
    assert (g["lo"], g["hi"]) == (0.0, 0.0) and second["interval"]["level"] == p.interval_level
    lines = evaluate.report(second)
    assert "  tg mIoU: no significant change (+0.000 [+0.000, +0.000])" in lines
    assert lines[-1] == "Nothing was learned: no task's headline metric improved beyond noise (95% interval)"
    table = read_json(tmp_path / "metrics" / "eval_samples.json")
    assert table["inputs_sha256"] == second["inputs_sha256"] and list(table["tasks"]) == sorted(PROBLEMS)
    assert second["protocol"] == table["protocol"] == "ours"  # the scoring protocol is recorded in both files
    assert table["tasks"]["tg"]["tg-0"]["candidate"] == table["tasks"]["tg"]["tg-0"]["baseline"]
    assert set(table["tasks"]["tracking"]["tracking-2"]["candidate"]) == {"miou", "ious", "parsed"}
    assert second["blind"] is None  # no training samples given
    for name in ("iou_hist.png", "candidate_vs_baseline.png", "reward_curves.png"):
        assert (tmp_path / "metrics" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # another decoding budget is another key: the base runs again (the scoring protocol is no part of the key)
    third = evaluate.run(params(tmp_path).model_copy(update={"max_new_tokens": 5, "protocol": "upstream"}),
                         str(candidate), tiny_model_dir, str(samples), MlflowParams())
    assert third["baseline"]["cached"] is False and third["baseline"]["cache"] != first["baseline"]["cache"]
    assert third["protocol"] == read_json(tmp_path / "metrics" / "eval_samples.json")["protocol"] == "upstream"
    entries = sorted(p.name for p in (tmp_path / "cache").glob("*.json") if p.name != "file-hashes.json")
    assert len(entries) == 2


def test_fingerprints_follow_model_content_inputs_and_frames(tiny_model_dir, samples, tmp_path):
    hasher = eval_cache.FileHasher(tmp_path / "memo.json")
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    base_fp = eval_cache.model_fingerprint(str(model), hasher)
    (model / "train_summary.json").write_text("{}")  # not part of the model
    assert eval_cache.model_fingerprint(str(model), hasher) == base_fp
    cfg = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**cfg, "note": 1}))
    assert eval_cache.model_fingerprint(str(model), hasher) != base_fp
    assert eval_cache.model_fingerprint("no/such-model", hasher) != base_fp

    rows = read_jsonl(samples)
    fp = eval_cache.inputs_fingerprint(rows, hasher)
    assert eval_cache.inputs_fingerprint([{**rows[0], "prompt": rows[0]["prompt"] + "!"}] + rows[1:], hasher) != fp
    other_times = [t + 1.0 for t in rows[0].get("frame_times") or [0.0]]  # what Qwen3-VL's text says
    assert eval_cache.inputs_fingerprint([{**rows[0], "frame_times": other_times}] + rows[1:], hasher) != fp
    frames = np.load(rows[0]["frames"])
    np.save(rows[0]["frames"], frames[::-1].copy())  # same file, other pixels
    try:
        assert eval_cache.inputs_fingerprint(rows, hasher) != fp
    finally:
        np.save(rows[0]["frames"], frames)
    hasher.save()
    assert json.loads((tmp_path / "memo.json").read_text())


def test_torn_cache_entry_is_ignored_and_rewritten(tmp_path):
    cache = eval_cache.GenerationCache(tmp_path)
    cache.put("k1", ["a", "b"], ["x", "y"], {})
    assert cache.get("k1", ["a", "b"]) == ["x", "y"]
    assert cache.get("k1", ["a"]) is None  # other rows: not this entry
    cache.path("k1").write_text('{"key": "k1", "ids": ["a", "b"], "outp')
    assert cache.get("k1", ["a", "b"]) is None


def test_metrics_predictions_and_plots_go_into_the_training_run(tiny_model_dir, samples, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    for step, r in enumerate([0.1, 0.3, 0.6], start=1):
        client.log_metric(run.info.run_id, "reward", r, step=step)
        client.log_metric(run.info.run_id, "rewards/tg_iou/mean", r / 2, step=step)
    client.set_terminated(run.info.run_id)
    summary = tmp_path / "train_summary.json"
    summary.write_text(json.dumps({"mlflow_run_id": run.info.run_id}))

    lock = tmp_path / "dvc.lock"
    lock.write_text("stages:\n  build_samples:\n    outs:\n    - path: %s\n      md5: %s.dir\n"
                    % (samples.parent, "d" * 32))
    whole = Params(evaluate=params(tmp_path), extract_frames={"max_frames": 8})
    res = evaluate.run(params(tmp_path), tiny_model_dir, tiny_model_dir, str(samples),
                       MlflowParams(tracking_uri=uri), str(summary), train_samples=str(samples), params=whole,
                       lock_path=str(lock))
    got = client.get_run(run.info.run_id)
    assert "eval/candidate/tg/mIoU" in got.data.metrics and "eval/baseline/qa/accuracy" in got.data.metrics
    assert "eval/candidate/gqa/Acc_GQA" in got.data.metrics
    assert {"eval/delta/tg/mIoU", "eval/delta_lo/tg/mIoU", "eval/delta_hi/qa/accuracy",
            "eval/blind/tracking/AO"} <= set(got.data.metrics)
    # the blind line, fit on the training samples (here the held-out ones): the static tracker is exact
    assert res["blind"]["train_samples"] == len(PROBLEMS) and res["blind"]["metrics"]["tracking"]["AO"] == 1.0
    assert res["blind"]["metrics"]["tg"]["mIoU"] == pytest.approx(3 / 3.2)  # [0.1, 0.5] x 8 s vs [1, 4]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/eval.json", "eval/eval_samples.json", "eval/predictions.jsonl", "eval/plots"} <= logged
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval/plots")} == {
        "eval/plots/iou_hist.png", "eval/plots/candidate_vs_baseline.png", "eval/plots/reward_curves.png",
        "eval/plots/reward_curves.json", "eval/plots/candidate_vs_base.json", "eval/plots/validation_curves.json",
        "eval/plots/training_reward_probe.json"}
    # the DVC plot data (dvc.yaml top-level plots): the run's reward curves, the headline metrics of both models
    curves = read_json(tmp_path / "metrics" / "plots" / "reward_curves.json")
    assert [(r["step"], r["all"], r["tg"], r["qa"]) for r in curves] == [
        (1, 0.1, 0.05, None), (2, 0.3, 0.15, None), (3, 0.6, 0.3, None)]
    bars = read_json(tmp_path / "metrics" / "plots" / "candidate_vs_base.json")
    assert {(r["task"], r["model"]) for r in bars} == {(t, m) for t in res["candidate"]["metrics"]
                                                         for m in ("base", "candidate")}
    from stages.eval_plots import reward_history

    hist = reward_history(client, run.info.run_id)
    assert hist["reward"] == [(1, 0.1), (2, 0.3), (3, 0.6)] and "rewards/tg_iou/mean" in hist
    # the evaluation's own run, linked to the training run: the same metrics, files, its dataset and settings
    (ev,) = client.search_runs([exp], f"tags.`{evaluate.TRAIN_RUN_TAG}` = '{run.info.run_id}'")
    assert ev.info.status == "FINISHED" and ev.data.tags["stage"] == "evaluate" and ev.info.run_id != run.info.run_id
    assert ev.info.run_name == f"evaluate-{run.info.run_name}"
    assert {k: v for k, v in ev.data.metrics.items() if k.startswith("eval/")} == {
        k: v for k, v in got.data.metrics.items() if k.startswith("eval/")}
    assert {"eval/eval.json", "eval/eval_samples.json", "eval/predictions.jsonl", "eval/plots"} <= {
        a.path for a in client.list_artifacts(ev.info.run_id, "eval")}
    (ds,) = ev.inputs.dataset_inputs
    assert {t.key: t.value for t in ds.tags} == {"mlflow.data.context": "evaluation",
                                                 f"dvc.{samples.parent}": "d" * 32 + ".dir"}
    assert ds.dataset.digest == hashlib.md5(samples.read_bytes()).hexdigest()
    assert json.loads(ds.dataset.profile)["dvc_md5"] == "d" * 32 + ".dir"
    assert ev.data.params["evaluate.bootstrap_resamples"] == str(whole.evaluate.bootstrap_resamples)
    assert ev.data.params["extract_frames.max_frames"] == "8" and "build_samples.think" in ev.data.params
    assert not any(k.startswith("evaluate.") for k in got.data.params)  # the training run keeps its own params
    mlflow.set_tracking_uri(None)


def test_unreachable_tracking_server_fails_before_generating(samples, tmp_path, monkeypatch):
    from infra.devstack import free_port
    from stages.mlflow_log import TrackingUnavailable

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    summary = tmp_path / "train_summary.json"
    summary.write_text(json.dumps({"mlflow_run_id": "0" * 32}))
    with pytest.raises(TrackingUnavailable, match=uri):
        evaluate.run(params(tmp_path), "no/such/candidate", "no/such/base", str(samples), MlflowParams(), str(summary))
    assert not (tmp_path / "metrics").exists()  # nothing generated, nothing written


def test_cache_dir_follows_videorft_cache_dir(tmp_path, monkeypatch):
    p = EvaluateParams(baseline_cache_dir=".cache/videorft/eval-baseline")
    monkeypatch.delenv("VIDEORFT_CACHE_DIR", raising=False)
    assert str(evaluate.cache_dir(p)) == ".cache/videorft/eval-baseline"
    monkeypatch.setenv("VIDEORFT_CACHE_DIR", str(tmp_path))
    assert evaluate.cache_dir(p) == tmp_path / "eval-baseline"
    assert evaluate.cache_dir(EvaluateParams(baseline_cache_dir=None)) is None


def test_reward_probe_samples_the_same_training_prompts_for_both_models(tiny_model_dir, samples, tmp_path,
                                                                         monkeypatch):
    """evaluate.reward_probe: base and candidate sample the same training prompts as GRPO does; a candidate with the
    base's weights samples the very same completions (seeded), so every difference is exactly 0; a rerun repeats it."""
    from stages.reward_probe import Sampling

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_model_dir, candidate)
    p = params(tmp_path, reward_probe={"tg": 1, "tracking": 1, "stvg": 3}, reward_probe_generations=3)
    sampling = Sampling(generations=3, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, think=True)
    got = evaluate.run(p, str(candidate), tiny_model_dir, str(samples), MlflowParams(), train_samples=str(samples),
                       sampling=sampling)
    probe = got["reward_probe"]
    assert set(probe) == {"tg", "tracking"}  # no stvg training prompts: not probed
    for t in probe.values():
        assert (t["delta"], t["lo"], t["hi"], t["prompts"], t["generations"]) == (0.0, 0.0, 0.0, 1, 3)
        assert t["baseline"] == t["candidate"] and t["verdict"] == "no significant change"
    again = evaluate.run(p, str(candidate), tiny_model_dir, str(samples), MlflowParams(), train_samples=str(samples),
                         sampling=sampling)
    assert again["reward_probe"] == probe
    assert read_json(tmp_path / "metrics" / "eval.json")["reward_probe"] == probe
    lines = evaluate.report(got)
    assert any(line.startswith("training reward tg (the same 1 training prompts sampled 3x as GRPO samples")
               and line.endswith("no significant change") for line in lines)
    off = evaluate.run(params(tmp_path), str(candidate), tiny_model_dir, str(samples), MlflowParams(),
                       train_samples=str(samples), sampling=sampling)
    assert "reward_probe" not in off  # {} = off


def test_video_swap_answers_the_same_prompts_with_other_frames(tiny_model_dir, frame_files, tmp_path, monkeypatch):
    """evaluate.video_swap: both models answer the first N rows per task again with another video's frames; the
    base's swapped answers are cached like its own; a task with a single video has no partner and is left out."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rows = [{"id": f"{task}-{i}", "task": task, "frames": frame_files[i], "fps": 1.0, "num_frames": 8,
             "prompt": task_registry.render_prompt(task, PROBLEMS[task][0]), "problem": PROBLEMS[task][0],
             "solution": PROBLEMS[task][1]} for task in ("tg", "qa") for i in range(3)]
    rows.append({**rows[0], "id": "tracking-0", "task": "tracking", "prompt": task_registry.render_prompt(
        "tracking", PROBLEMS["tracking"][0]), "problem": PROBLEMS["tracking"][0], "solution": PROBLEMS["tracking"][1]})
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, rows)
    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_model_dir, candidate)
    p = params(tmp_path, video_swap=2)
    got = evaluate.run(p, str(candidate), tiny_model_dir, str(path), MlflowParams())
    sw = got["video_swap"]
    # 2 rows of tg and of qa; the single tracking video has no partner
    assert (sw["per_task"], sw["samples"], sw["left_out"]) == (2, 4, 1)
    assert set(sw["candidate"]) == set(sw["baseline"]) == {"tg", "qa"}
    assert sw["candidate"] == sw["baseline"]  # same weights, same inputs: the same answers
    for task, s in sw["candidate"].items():
        assert s["n"] == 2 and s["metric"] == task_registry.headline()[task] and 0 <= s["own"] <= 1
        assert abs(s["delta"] - (s["own"] - s["other"])) < 1e-6 and s["lo"] <= s["delta"] <= s["hi"]
    assert read_json(tmp_path / "metrics" / "eval.json")["video_swap"] == sw
    assert any("with another video's frames (same prompts, 2 samples), candidate" in line
               for line in evaluate.report(got))
    again = evaluate.run(p, str(candidate), tiny_model_dir, str(path), MlflowParams())
    assert again["video_swap"] == sw
    assert len(list((tmp_path / "cache").glob("*.json"))) >= 2  # the base's own and swapped answers are cached
    assert "video_swap" not in evaluate.run(params(tmp_path), str(candidate), tiny_model_dir, str(path),
                                            MlflowParams())  # 0 = off
