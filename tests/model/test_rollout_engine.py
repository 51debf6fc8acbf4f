"""The rollout engine seam (stages/rl/rollout.py): `shared_prefill` samples the same completions as transformers'
plain generate and gives the same rewards and advantages, with prompts of different lengths in one left-padded
batch (the case a first version got wrong: rope offsets and KV cache copied to the wrong rows), and with one
prompt text on two different videos (identical input_ids, different prefills). Both families."""
import pytest
import torch
from test_video_grpo import length_reward, make_trainer, rollout

pytestmark = pytest.mark.filterwarnings("ignore")

SHORT = "When?"
LONG = ("Give the start and end time of the moment when the small red square slides across the whole frame "
        "from the left edge to the right edge, then stops for a while near the corner.")


def rows_of(frame_files, prompts):
    return [{"id": f"s{i}", "task": "tg", "prompt": text, "frames": frame_files[i], "fps": 2.0,
             "solution": {"timestamps": [1.0, 2.0]}} for i, text in enumerate(prompts)]


def sampled(model_dir, frame_files, tmp_path, engine, prompts):
    """One rollout (2 prompts x G=4, temperature 1) from a fixed torch seed: what the engine sampled and scored."""
    tr = make_trainer(model_dir, frame_files, [length_reward], tmp_path / engine,
                      rows=rows_of(frame_files, prompts), trainer_kwargs={"rollout_engine": engine})
    torch.manual_seed(123)
    _, out = rollout(tr)
    return tr, out


@pytest.mark.parametrize("prompts", [[SHORT, LONG], [LONG, LONG]], ids=["lengths_differ", "same_text_two_videos"])
def test_shared_prefill_samples_what_plain_generate_samples(prompts, family_model_dir, frame_files, tmp_path):
    _, model_dir = family_model_dir
    plain_tr, plain = sampled(model_dir, frame_files, tmp_path, "hf", prompts)
    shared_tr, shared = sampled(model_dir, frame_files, tmp_path, "shared_prefill", prompts)
    assert shared_tr.rollout_engine.last_prefill_rows == 2  # 8 completions, 2 distinct (prompt, video) pairs
    mask = plain["prompt_mask"]
    if prompts[0] != prompts[1]:
        assert (mask.sum(1).unique().numel()) == 2, "the batch must hold prompts of two lengths (left padding)"
    assert torch.equal(plain["prompt_ids"], shared["prompt_ids"])
    assert torch.equal(plain["completion_ids"], shared["completion_ids"])
    assert torch.equal(plain["completion_mask"], shared["completion_mask"])
    assert torch.allclose(plain["advantages"], shared["advantages"])
    # the completions are not all alike (a sampler stuck on one token would hide a wrong prefill)
    texts = plain_tr.processing_class.batch_decode(plain["completion_ids"], skip_special_tokens=True)
    assert len(set(texts)) > 2, texts


def test_shared_prefill_gives_every_token_the_positions_of_plain_generate(family_model_dir, frame_files, tmp_path):
    """The 3-D rope positions the language model gets for the last prompt token and each generated one are
    those of plain generate. A first fix derived them from the prefix's rope offset: Qwen2.5-VL's temporal
    positions run past the text after the video, so that put every token 2 positions off (the demo's GRPO then
    sampled from another distribution than it scored: KL 150 by step 30). Weights cannot hide this check."""
    from stages.model.shared_video import video_index, vl_core

    _, model_dir = family_model_dir
    tr = make_trainer(model_dir, frame_files, [length_reward], tmp_path, rows=rows_of(frame_files, [SHORT, LONG]),
                      trainer_kwargs={"rollout_engine": "shared_prefill"})
    batch = next(iter(tr.get_train_dataloader()))
    tr._pending_inputs = batch
    prompt_ids, _, _ = tr._tokenize_prompts([b["prompt"] for b in batch])
    rows = tr._generation_rows
    width = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompt_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    model = tr.model.eval()
    video, index = tr._video_kwargs(model, rows, ids)
    inputs = {"input_ids": ids, "attention_mask": mask, **video}
    seen: list[torch.Tensor] = []
    hook = vl_core(model).language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["position_ids"]), with_kwargs=True)
    config = _greedy(4)
    with torch.no_grad(), video_index(index):
        plain = model.generate(**inputs, generation_config=config)
        n_plain = len(seen)
        shared = tr.rollout_engine.generate(model, model.generate, inputs, config, rows, tr._video_kwargs)
    hook.remove()
    assert tr.rollout_engine.last_prefill_rows == 2
    assert torch.equal(plain, shared)
    want, got = seen[:n_plain], seen[n_plain + 1:]  # got: after the shared prefill's own forward
    assert len(want) == len(got) == 4
    assert torch.equal(got[0][..., -1], want[0][..., -1])  # the last prompt token
    for w, g in zip(want[1:], got[1:]):  # each generated token
        assert torch.equal(g, w)


def _greedy(tokens: int):
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)


def test_shared_prefill_samples_what_plain_generate_samples_from_the_shipped_base(frame_files, tmp_path):
    """End to end on the shipped base: the same completions and advantages (the positions test above is the one
    that caught the 2-position offset; this one did not: random frames leave the base little to see)."""
    from pathlib import Path

    base = str(Path(__file__).resolve().parents[2] / "pretrained" / "tiny-qwen2_5_vl")
    plain_tr, plain = sampled(base, frame_files, tmp_path, "hf", [SHORT, LONG])
    _, shared = sampled(base, frame_files, tmp_path, "shared_prefill", [SHORT, LONG])
    assert torch.equal(plain["completion_ids"], shared["completion_ids"])
    assert torch.allclose(plain["advantages"], shared["advantages"])


def test_shared_prefill_under_lora(tiny_model_dir, frame_files, tmp_path):
    """With LoRA, TRL generates through peft's wrapper: the engine is still reached, with the same samples."""
    from stages.params import LoraParams
    from stages.rl.policy import lora_config

    extra = {"peft_config": lora_config(LoraParams(enabled=True, r=4, alpha=8, dropout=0.0))}
    out = {}
    for engine in ("hf", "shared_prefill"):
        tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path / engine,
                          rows=rows_of(frame_files, [SHORT, LONG]), trainer_kwargs={**extra, "rollout_engine": engine})
        torch.manual_seed(123)
        out[engine] = rollout(tr)[1]["completion_ids"]
    assert tr.rollout_engine.last_prefill_rows == 2
    assert torch.equal(out["hf"], out["shared_prefill"])
