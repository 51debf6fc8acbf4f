"""Rollout engines: how the trainer turns a left-padded prompt batch into prompt + completion ids.

This is the seam another engine (vLLM, SGLang, a remote server) fills. TRL's generation path pads the prompts,
unwraps the model and calls `model.generate(**inputs, generation_config=...)`; VideoGRPOTrainer routes that call
to an engine's `generate(model, generate, inputs, generation_config, rows, video_kwargs)`:

- model: the Hugging Face model (LoRA layers, if any, are inside it);
- generate: the model's own generate, for engines that build on it;
- inputs: what TRL built (input_ids, attention_mask, the video tensors, mm_token_type_ids), one row per completion;
- rows: the per-row encodings, rows of one prompt on one video being the same object
  (VideoGRPOTrainer._tokenize_prompts), or None when unknown;
- video_kwargs(model, rows, input_ids) -> (forward kwargs, distinct-video index) for any subset of rows.
It returns prompt + completion ids, one row per input row, as `generate` does.

Engines (train.rollout_engine):
- `hf`: transformers' generate as TRL calls it.
- `shared_prefill`: the G completions of a prompt share one prefill. The distinct prompts (all tokens but the
  last) go through the model once, their KV cache is copied to the G rows of each, and generate continues from
  there with the 3-D rope positions it would give the whole prompt; the video is in the cache, so generate gets
  no pixels. The same samples as `hf`, also with prompts of different lengths in one left-padded batch
  (tests/model/test_rollout_engine.py).
"""
from __future__ import annotations

import torch

from stages.model.shared_video import distinct_objects, video_index
from stages.model.video_inputs import VIDEO_FIELDS


class HFGenerate:
    name = "hf"

    def generate(self, model, generate, inputs, generation_config, rows=None, video_kwargs=None):
        return generate(**inputs, generation_config=generation_config)


class SharedPrefill:
    name = "shared_prefill"

    def __init__(self):
        self.last_prefill_rows = 0  # distinct prompts prefilled by the last call (tests, benchmark)

    def generate(self, model, generate, inputs, generation_config, rows=None, video_kwargs=None):
        self.last_prefill_rows = 0
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if rows is None or video_kwargs is None or len(rows) != ids.size(0) or ids.size(1) < 2:
            return generate(**inputs, generation_config=generation_config)
        first, inverse = distinct_objects(rows)
        if len(first) == len(rows):  # nothing to share
            return generate(**inputs, generation_config=generation_config)
        pick = torch.tensor(first, device=ids.device)
        # Left padding: every row's last token is a real one, so [:, :-1] keeps each prompt but its last token,
        # which generate then feeds as the first uncached token (it needs at least one).
        head_ids = ids[pick]
        fields, index = video_kwargs(model, [rows[i] for i in first], head_ids)
        fields["mm_token_type_ids"] = fields["mm_token_type_ids"][:, :-1]
        with torch.no_grad(), video_index(index):
            out = model(input_ids=head_ids[:, :-1], attention_mask=mask[pick][:, :-1], use_cache=True,
                        logits_to_keep=1, **fields)
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor(inverse, device=ids.device))  # row i gets its prompt's keys and values
        # The positions generate would give the whole prompt, computed as generate computes them (3-D rope index
        # over every row; no forward). They cannot be derived from the prefix's rope offset: Qwen2.5-VL's
        # temporal positions can run past the text that follows the video, so a prompt's largest position is not
        # always its last token's, and the prefix's offset then puts the last token (and every generated one)
        # 2 positions off.
        positions = model._prepare_position_ids_for_generation(ids, {"attention_mask": mask, **{
            k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}})
        self.last_prefill_rows = len(first)
        rest = {k: v for k, v in inputs.items() if k not in VIDEO_FIELDS}
        return generate(**rest, past_key_values=cache, position_ids=positions, generation_config=generation_config)


ENGINES = {e.name: e for e in (HFGenerate, SharedPrefill)}


def make_engine(name: str):
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {sorted(ENGINES)}")
    return ENGINES[name]()
