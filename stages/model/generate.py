"""Batched greedy generation with video, for evaluation, serving and the recipes (pinned decoding: no sampling,
checkpoint defaults overridden so a model's own generation_config cannot change the result)."""
from __future__ import annotations

import torch

from stages.model.shared_video import share_video_features
from stages.model.video_inputs import encode_sample, model_video_kwargs, placeholder_token_ids

# Pinned decoding: greedy, one beam; part of the evaluation base-cache key (stages/eval_cache.py).
DECODING = {"do_sample": False, "num_beams": 1}


def left_padded(enc: list[dict], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of encoded rows, left-padded: generation continues from the right edge."""
    width = max(len(e["input_ids"]) for e in enc)
    ids = torch.full((len(enc), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e["input_ids"]):] = torch.tensor(e["input_ids"])
        mask[i, width - len(e["input_ids"]):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(model, processor, rows: list[dict], max_new_tokens: int, batch_size: int = 4,
             desc: str | None = None, input_cache=None) -> list[str]:
    """rows carry prompt (text), frames (path), fps and frame_times (stages/model/video_inputs.py). Returns one
    decoded completion per row, in order. With `desc`, a progress bar (samples) on stderr; with `input_cache`
    (stages/model/input_cache.py), processed inputs come from it."""
    from tqdm.auto import tqdm

    share_video_features(model)  # rows that share a video (one clip, several questions) encode it once
    encode = input_cache.encode_sample if input_cache is not None else encode_sample
    bar = tqdm(total=len(rows), desc=desc, unit="sample", disable=desc is None)
    tok = processor.tokenizer
    cfg = model.config
    device = next(model.parameters()).device
    outputs: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        enc = [encode(processor, r) for r in chunk]
        ids, mask = left_padded(enc, tok.pad_token_id, device)
        width = ids.shape[1]
        video = model_video_kwargs(enc, ids, cfg.video_token_id, getattr(cfg, "image_token_id", None))
        out = model.generate(
            input_ids=ids, attention_mask=mask, **video,
            **DECODING, max_new_tokens=max_new_tokens,
            temperature=None, top_p=None, top_k=None,
            suppress_tokens=placeholder_token_ids(tok),
            pad_token_id=tok.pad_token_id, eos_token_id=cfg.text_config.eos_token_id,
        )
        outputs += tok.batch_decode(out[:, width:], skip_special_tokens=True)
        bar.update(len(chunk))
    bar.close()
    return outputs
