"""The supervised warm start: rows capped per task; a short run lowers the loss and saves a loadable checkpoint.
Its targets (each task module's target_text / prior_solution) are tested in tests/unit/test_task_targets.py."""
import json
import random

from stages.sft import select_rows


def test_select_rows_caps_each_task_and_dedups():
    rows = [{"id": f"{t}{i % 5}", "task": t} for t in ("tg", "qa") for i in range(10)]
    picked = select_rows(rows, 3, seed=0)
    assert sorted(r["task"] for r in picked) == ["qa"] * 3 + ["tg"] * 3
    assert len({(r["task"], r["id"]) for r in picked}) == 6


def test_short_warm_start_lowers_loss_and_saves(tmp_path, tiny_model_dir, frame_files):
    from transformers import AutoModelForImageTextToText

    from stages.params import ModelParams, SftParams
    from stages.sft import run

    rows = [{"id": f"s{i}", "task": "tg", "prompt": "When?", "frames": frame_files[i % 4], "fps": 2.0,
             "problem": {"sentence": "x", "duration": 4.0}, "solution": {"timestamps": [1.0, 2.0]}}
            for i in range(4)]
    samples = tmp_path / "train.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = SftParams(enabled=True, out_dir=str(tmp_path / "sft"), targets="gold", epochs=6, batch_size=2,
                  learning_rate=3e-3, max_samples_per_task=4)
    s = run(p, ModelParams(name_or_path=tiny_model_dir), str(samples))
    assert s["steps"] == 12 and s["last_loss"] < s["first_loss"] * 0.7, s
    AutoModelForImageTextToText.from_pretrained(s["model"])  # a loadable checkpoint
    off = run(SftParams(enabled=False, out_dir=str(tmp_path / "off")), ModelParams(name_or_path="base"), str(samples))
    assert off == {"enabled": False, "model": "base"}


def test_fit_reports_each_epoch(tiny_model_dir, frame_files):
    """The probe's hook (recipes/warm_start_probe.py): called after every epoch with that epoch's step losses."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.sft import encode_example, fit

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = [{"id": f"s{i}", "task": "tg", "prompt": "When?", "frames": frame_files[i % 4], "fps": 2.0,
             "problem": {"sentence": "x", "duration": 4.0}, "solution": {"timestamps": [1.0, 2.0]}} for i in range(3)]
    seen = []
    losses = fit(model, processor, [encode_example(processor, r, True) for r in rows], 3e-3, 2, 2, random.Random(0),
                 lambda epoch, epoch_losses: seen.append((epoch, epoch_losses)))
    assert [e for e, _ in seen] == [1, 2] and [len(x) for _, x in seen] == [2, 2]  # 3 examples, batch 2
    assert losses == seen[0][1] + seen[1][1]


def test_row_balanced_loss_is_the_mean_of_each_rows_own_loss(tiny_model_dir, frame_files):
    """per_row: an answer of many tokens weighs as much as a short one. Checked against each row's loss computed
    alone (a batch of one, where the token mean is that row's mean) - not with the code under test's formula."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.sft import encode_example, sft_loss

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    short = {"id": "a", "task": "tg", "prompt": "When?", "frames": frame_files[0], "fps": 2.0,
             "problem": {"sentence": "x", "duration": 4.0}, "solution": {"timestamps": [1.0, 2.0]}}
    long = {**short, "id": "b", "frames": frame_files[1], "solution": {"timestamps": [0.25, 3.75]}}
    batch = [encode_example(processor, short, False), encode_example(processor, long, True)]  # think: more tokens
    vid = model.config.video_token_id
    with torch.no_grad():
        alone = [sft_loss(model, processor, [b], vid).item() for b in batch]
        token_mean = sft_loss(model, processor, batch, vid).item()
        row_mean = sft_loss(model, processor, batch, vid, per_row=True).item()
    counts = [int((torch.as_tensor(lab) != -100).sum()) for _, lab, _ in batch]
    assert abs(row_mean - sum(alone) / 2) < 1e-4
    assert abs(token_mean - sum(a * c for a, c in zip(alone, counts)) / sum(counts)) < 1e-4
    assert counts[0] < counts[1] and abs(row_mean - token_mean) > 1e-6
