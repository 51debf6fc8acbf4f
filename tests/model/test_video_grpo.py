"""The video-aware GRPO trainer: video reaches the loss forward, gradients reach the vision tower, placeholders
are never sampled, reward kwargs line up with completions — for Qwen2.5-VL and Qwen3-VL."""
import json

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")


def tg_rows(frame_files, n=8):
    return [{"id": f"s{i}", "task": "tg", "prompt": f"When is event {i}?", "frames": frame_files[i % 4],
             "fps": 2.0, "solution": {"timestamps": [1.0, 2.0]}} for i in range(n)]


def make_trainer(model_dir, frame_files, reward_funcs, tmp_path, rows=None, trainer_kwargs=None, model=None,
                 **overrides):
    """A VideoGRPOTrainer on the tiny model: 2 prompts x G=4 per step, 12-token completions, CPU."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.params import TrainParams
    from stages.rl.video_grpo import VideoGRPOTrainer
    from stages.train import build_dataset, grpo_config

    rows = rows or tg_rows(frame_files)
    settings = dict(num_generations=4, per_device_train_batch_size=8, max_steps=1, max_completion_length=12,
                    learning_rate=1e-3, tasks=sorted({r["task"] for r in rows}))
    p = TrainParams(**{**settings, **overrides})
    torch.manual_seed(0)
    model = model or AutoModelForImageTextToText.from_pretrained(model_dir)
    return VideoGRPOTrainer(model=model, processing_class=AutoProcessor.from_pretrained(model_dir),
                            reward_funcs=reward_funcs, args=grpo_config(p, str(tmp_path), use_cpu=True),
                            train_dataset=build_dataset(rows, p.tasks), **(trainer_kwargs or {}))


def rollout(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    return batch, trainer._generate_and_score_completions(batch)


def length_reward(prompts, completions, **kw):
    return [len(c[0]["content"]) / 10 for c in completions]


def test_loss_logps_equal_direct_forward_with_video(family_model_dir, frame_files, tmp_path):
    from stages.rl.video_grpo import VIDEO_ROWS
    from stages.model.video_inputs import model_video_kwargs

    family, model_dir = family_model_dir
    tr = make_trainer(model_dir, frame_files, [length_reward], tmp_path)
    assert tr.model.config.model_type == family
    _, out = rollout(tr)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    k = out["completion_ids"].size(1)
    tr._active_rows = out[VIDEO_ROWS]
    with torch.no_grad():
        logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, mask, k, batch_size=3)
    tr._active_rows = None
    cfg = tr.model.config
    video = model_video_kwargs(out[VIDEO_ROWS], ids, cfg.video_token_id, cfg.image_token_id)
    with torch.no_grad():
        logits = tr.model(input_ids=ids, attention_mask=mask, **video).logits[:, -k - 1:-1]
        direct = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, -k:, None]).squeeze(-1)
        blind = tr.model(input_ids=ids, attention_mask=mask).logits[:, -k - 1:-1]
        blind = torch.log_softmax(blind.float(), -1).gather(-1, ids[:, -k:, None]).squeeze(-1)
    m = out["completion_mask"].bool()
    assert torch.allclose(logps[m], direct[m], atol=1e-4), (logps[m] - direct[m]).abs().max()
    # and the video matters: the same tokens scored without it give other log-probs
    assert (logps[m] - blind[m]).abs().max() > 1e-3


def test_vision_tower_receives_gradient(family_model_dir, frame_files, tmp_path):
    _, model_dir = family_model_dir
    tr = make_trainer(model_dir, frame_files, [length_reward], tmp_path, beta=0.04)
    _, out = rollout(tr)
    assert out["advantages"].abs().sum() > 0, "need a nonzero advantage for a gradient"
    tr.model.zero_grad()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    loss = tr.compute_loss(tr.model, out)
    loss.backward()
    visual = [p.grad for n, p in tr.model.named_parameters() if ".visual." in f".{n}" and p.grad is not None]
    assert visual, "no vision-tower parameter got a gradient"
    assert sum(g.abs().sum().item() for g in visual) > 0


def test_reward_kwargs_line_up_with_completions_and_groups_vary(tiny_model_dir, frame_files, tmp_path):
    seen = {}

    def spy(prompts, completions, task, solution, id, **kw):
        seen.update(prompts=prompts, completions=completions, task=task, solution=solution, id=id)
        return [0.0] * len(completions)

    tr = make_trainer(tiny_model_dir, frame_files, [spy], tmp_path)
    batch, _ = rollout(tr)
    n = len(batch)
    assert n == 8 and all(len(seen[k]) == n for k in ("completions", "task", "solution", "id"))
    assert seen["id"] == [b["id"] for b in batch]  # same order as the rollout batch (G copies per prompt)
    assert all(json.loads(s)["timestamps"] == [1.0, 2.0] for s in seen["solution"])
    groups = {}
    for i, c in zip(seen["id"], seen["completions"]):
        groups.setdefault(i, []).append(c[0]["content"])
    assert all(len(g) == 4 for g in groups.values())
    assert all(len(set(g)) >= 2 for g in groups.values()), "temperature 1 must give distinct rollouts per group"


def test_placeholders_are_suppressed(tiny_model_dir, frame_files, tmp_path):
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path)
    tok = tr.processing_class.tokenizer
    for t in ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>"):
        assert tok.convert_tokens_to_ids(t) in tr.generation_config.suppress_tokens
    # force the policy to prefer <|video_pad|>: it still never appears in a completion
    vid = tok.convert_tokens_to_ids("<|video_pad|>")
    with torch.no_grad():
        tr.model.lm_head.weight[vid] *= 0
        tr.model.lm_head.bias = None
        tr.model.lm_head.weight[vid] += tr.model.lm_head.weight.abs().max() * 50
    _, out = rollout(tr)
    assert not (out["completion_ids"] == vid).any()


def test_frame_timing_reaches_each_family(tiny_model_dir, tiny_qwen3_dir, tmp_path):
    """Qwen2.5-VL gets the sampled fps as second_per_grid_ts; Qwen3-VL gets the frame cache's real timestamps
    written into the prompt (one "<t seconds>" per temporal patch: the mean of its two frames)."""
    import numpy as np
    from transformers import AutoProcessor

    from stages.model.video_inputs import encode, encode_sample, video_message

    frames = np.random.default_rng(1).integers(0, 255, (8, 84, 112, 3), dtype=np.uint8)
    path = tmp_path / "clip.npy"
    np.save(path, frames)
    stamps = [0.0, 1.25, 2.5, 3.75, 5.125, 6.375, 7.625, 8.875]  # sampled at ~0.8 fps, not exactly i / fps
    (tmp_path / "clip.json").write_text(json.dumps({"timestamps": stamps}))
    fps = 0.888889

    row = {"prompt": "When?", "frames": str(path), "fps": fps}  # no frame_times: read beside the frames
    q25 = encode_sample(AutoProcessor.from_pretrained(tiny_model_dir), row)
    assert torch.allclose(q25["second_per_grid_ts"], torch.tensor([2 / fps]))

    proc = AutoProcessor.from_pretrained(tiny_qwen3_dir)
    q3 = encode_sample(proc, row)
    assert "second_per_grid_ts" not in q3
    text = proc.tokenizer.decode(q3["input_ids"])
    assert [f"<{(a + b) / 2:.1f} seconds>" in text for a, b in zip(stamps[::2], stamps[1::2])] == [True] * 4
    # the times build_samples writes into the row give the same inputs, with no meta beside the frames
    (tmp_path / "clip.json").unlink()
    for processor, want in ((AutoProcessor.from_pretrained(tiny_model_dir), q25), (proc, q3)):
        got = encode_sample(processor, {**row, "frame_times": stamps})
        assert got.keys() == want.keys() and got["input_ids"] == want["input_ids"]
        assert all(torch.equal(got[k], want[k]) for k in want if k != "input_ids")
    # a plain array (no frame-cache file) falls back to i / fps
    plain = proc.tokenizer.decode(encode(proc, video_message("When?"), frames, 2.0)["input_ids"])
    assert "<0.2 seconds>" in plain and "<3.2 seconds>" in plain
