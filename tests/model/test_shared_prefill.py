"""The G completions of a prompt share one prefill (stages/model/shared_prefill.py): the generated tokens are
those of the plain path (greedy), the prompt goes through the model once per distinct prompt, for both families."""
import pytest
import torch
from test_video_grpo import length_reward, make_trainer, rollout

pytestmark = pytest.mark.filterwarnings("ignore")


def batch(processor, frame_files, model, g=4):
    """2 prompts on 2 clips x g copies, left-padded, with the distinct videos' pixels and the row index."""
    from stages.model.shared_video import distinct_objects
    from stages.model.video_inputs import encode_sample, model_video_kwargs

    enc = [encode_sample(processor, {"prompt": f"When is event {i}?", "frames": frame_files[i], "fps": 2.0})
           for i in range(2)]
    rows = [e for e in enc for _ in range(g)]
    width = max(len(e["input_ids"]) for e in rows)
    ids = torch.full((len(rows), width), processor.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(rows):
        ids[i, width - len(e["input_ids"]):] = torch.tensor(e["input_ids"])
        mask[i, width - len(e["input_ids"]):] = 1
    first, index = distinct_objects([r["pixel_values_videos"] for r in rows])
    cfg = model.config
    video = model_video_kwargs(rows, ids, cfg.video_token_id, cfg.image_token_id, [rows[i] for i in first])
    return ids, mask, video, index


def test_shared_prefill_generates_the_plain_paths_tokens(family_model_dir, frame_files):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.model.shared_prefill import shared_prefill
    from stages.model.shared_video import share_video_features, video_index, vl_core

    _, model_dir = family_model_dir
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    share_video_features(model)
    ids, mask, video, index = batch(AutoProcessor.from_pretrained(model_dir), frame_files, model)
    kw = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    with video_index(index):
        plain = model.generate(input_ids=ids, attention_mask=mask, **video, **kw)
    prompt_batches = []
    hook = vl_core(model).language_model.register_forward_pre_hook(
        lambda _m, _a, k: prompt_batches.append(tuple(k["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        with video_index(index), shared_prefill(model):
            shared = model.generate(input_ids=ids, attention_mask=mask, **video, **kw)
    finally:
        hook.remove()
    assert "generate" not in model.__dict__, "the plain generate is back after the block"
    assert torch.equal(plain, shared)
    # one prefill of the 2 distinct prompts (all but the last token), then 8-row steps of one token each
    assert prompt_batches[0] == (2, ids.size(1) - 1)
    assert all(b == (8, 1) for b in prompt_batches[1:])


def test_rollout_prefills_each_prompt_once(tiny_model_dir, frame_files, tmp_path):
    from stages.model.shared_video import vl_core

    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path)
    shapes = []
    hook = vl_core(tr.model).language_model.register_forward_pre_hook(
        lambda _m, _a, k: shapes.append(tuple(k["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        examples, out = rollout(tr)
    finally:
        hook.remove()
    prompts = len({e["id"] for e in examples})
    assert shapes[0][0] == prompts and shapes[1] == (len(examples), 1)
    assert out["completion_ids"].size(0) == len(examples)
