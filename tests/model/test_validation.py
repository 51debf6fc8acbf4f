"""Greedy validation during training (train.validation): it watches without changing the trajectory, logs each
task's greedy metrics at the documented steps, and the saved model is the weights of the step its rule picks.

The first test's base is the tiny model rewired into a prompt-blind sampler of answer-shaped text
(tests/model/_multirank_worker.py), so the real rewards vary and every step moves the weights; the second starts
from the shipped base, whose greedy answers parse, and breaks them with a large learning rate.
"""
import json

import pytest
import torch
import yaml
from test_resume import ROOT, metric_series, train, workspace

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def set_validation(root, **validation):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["validation"] = validation
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_validation_watches_without_changing_training(answering_model, frame_files, tmp_path):
    from safetensors.torch import load_file

    from stages.io import read_jsonl
    from stages.rl.validation import split_validation

    ws, env = workspace(tmp_path / "val", answering_model, frame_files)
    set_validation(ws, per_task=2, steps=2, select="last", batch_size=3)
    out = train(ws, env)
    summary = json.loads((ws / "run" / "train_summary.json").read_text())
    val = summary["validation"]
    rows = read_jsonl(ws / "samples" / "train.jsonl")
    kept, aside = split_validation(rows, ["tg", "qa"], 2, 0)  # whole videos: rows sharing frames go together
    assert [h["step"] for h in val["history"]] == [0, 2, 4] and val["rows"] == len(aside) >= 4
    assert summary["selected_step"] == summary["steps"] == 4
    assert summary["samples"] == len(kept) == len(rows) - len(aside)
    assert "validate step 0 | tg mIoU" in out.stdout and "validate step 4" in out.stdout
    series = metric_series(ws, summary["mlflow_run_id"])
    assert set(series["val/tg/mIoU"]) == {0, 2, 4} and set(series["val/qa/parse_rate"]) == {0, 2, 4}
    assert series["selected_step"] == {0: 4.0}
    for h in val["history"]:  # what was logged is what the history holds
        assert series["val/tg/mIoU"][h["step"]] == pytest.approx(h["metrics"]["tg"]["mIoU"])

    # the same run on the training rows alone, without validation: the same weights, bit for bit
    ref, env = workspace(tmp_path / "ref", answering_model, frame_files)
    (ref / "samples" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    train(ref, env)
    a, b = load_file(ws / "run" / "model.safetensors"), load_file(ref / "run" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_the_saved_model_is_the_picked_steps_weights(frame_files, tmp_path):
    from safetensors.torch import load_file

    from stages.params import ValidationParams
    from stages.rl.validation import selected

    base = str(ROOT / "pretrained" / "tiny-qwen2_5_vl")  # answers in the layout: the greedy metrics vary
    ws, env = workspace(tmp_path / "best", base, frame_files, save_steps=1, save_total_limit=10,
                        keep_checkpoints=True, learning_rate=5e-3)
    set_validation(ws, per_task=2, steps=1, select="best", batch_size=3)
    train(ws, env)
    summary = json.loads((ws / "run" / "train_summary.json").read_text())
    history = summary["validation"]["history"]
    assert [h["step"] for h in history] == [0, 1, 2, 3, 4]
    p = ValidationParams(select="best")
    pick = selected(history, "best", {"tg": "mIoU", "qa": "accuracy"}, p.parse_drop)["step"]
    assert summary["selected_step"] == pick
    assert pick < summary["steps"], "lr 5e-3 breaks the greedy answers: an earlier step must win (a real rollback)"
    got = load_file(ws / "run" / "model.safetensors")
    want = (load_file(f"{base}/model.safetensors") if pick == 0 else
            load_file(next((ws / "ckpt").glob(f"*/checkpoint-{pick}")) / "model.safetensors"))
    assert all(got[k].equal(want[k]) for k in want)


def test_weight_ema_saves_the_average_of_the_steps_weights(answering_model, frame_files, tmp_path):
    """The saved model is the decay-weighted average of the base and every step's weights, recomputed here from the
    kept checkpoints (one per step), not with the code under test."""
    from safetensors.torch import load_file

    decay = 0.5
    ws, env = workspace(tmp_path / "ema", answering_model, frame_files, save_steps=1, save_total_limit=10,
                        keep_checkpoints=True, weight_ema=decay)
    train(ws, env)
    got = load_file(ws / "run" / "model.safetensors")
    steps = [load_file(f"{answering_model}/model.safetensors")]
    steps += [load_file(next((ws / "ckpt").glob(f"*/checkpoint-{k}")) / "model.safetensors") for k in (1, 2, 3, 4)]
    moved = 0
    for name in steps[0]:
        avg = steps[0][name].float()
        for w in steps[1:]:
            avg = decay * avg + (1 - decay) * w[name].float()
        assert torch.allclose(got[name].float(), avg, atol=1e-6), name
        moved += not torch.equal(steps[-1][name], got[name])
    assert moved > 10, "the average differs from the last step's weights"
    assert len(list((ws / "ckpt").glob("*/checkpoint-*/ema.safetensors"))) == 4  # a resume continues the average


def test_a_killed_run_resumes_its_average_and_its_validation_history(answering_model, frame_files, tmp_path):
    """Killed (SIGKILL) once its step-2 checkpoint is written, the run with weight_ema and validation resumes:
    same validation history, same saved model as the uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    def setup(name):
        root, env = workspace(tmp_path / name, answering_model, frame_files, weight_ema=0.5)
        set_validation(root, per_task=2, steps=1, select="last", batch_size=3)
        return root, env

    ref, env = setup("ref")
    train(ref, env)
    ws, env = setup("ws")
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=ws, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while not list((ws / "ckpt").glob("*/checkpoint-2/ema.safetensors")):
            assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    train(ws, env)
    got, want = (json.loads((d / "run" / "train_summary.json").read_text()) for d in (ws, ref))
    assert got["resumed_from_step"] == 2
    assert [h["step"] for h in got["validation"]["history"]] == [0, 1, 2, 3, 4]
    assert got["validation"]["history"] == want["validation"]["history"]
    a, b = load_file(ref / "run" / "model.safetensors"), load_file(ws / "run" / "model.safetensors")
    assert all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)
