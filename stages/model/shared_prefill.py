"""Generation where identical prompts share one prefill: the G completions of a GRPO prompt are G identical rows.

The rollout engine is transformers' generate (TRL's default path). Inside shared_prefill(model), the model's
generate runs the prompt through the model once per distinct row (all but its last token, with the video),
copies that KV cache and the 3D-rope offsets to every row holding the prompt, and lets the original generate
continue from there (it feeds the last prompt token, then samples). The completions are those of the plain path
(greedy: token for token, tested); only the prompt's forward is no longer repeated G times.

Another engine (vLLM, a paged/continuous-batching server) replaces the whole generate call instead; this module
is the transformers engine's part only. Measured on the tiny CPU model (bench/bench_video_step.py,
docs/training.md): a rollout's generate call 7 % less CPU; transformers' static cache without torch.compile gained
nothing there and is not used.
"""
from __future__ import annotations

import contextlib

import torch

from stages.model.shared_video import current_video_index, video_index, vl_core

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")


def distinct_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     videos: list[int] | None) -> tuple[list[int], list[int]]:
    """(first, inverse) over rows with identical input_ids, attention_mask and video (`videos`: each row's video
    among the distinct ones; None: no video)."""
    keys = [(*r, videos[i] if videos else None)
            for i, r in enumerate(torch.cat([input_ids, attention_mask], 1).tolist())]
    seen: dict[tuple, int] = {}
    first: list[int] = []
    inverse: list[int] = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        inverse.append(seen[key])
    return first, inverse


@contextlib.contextmanager
def shared_prefill(model):
    """Inside the block, `model.generate` prefills each distinct prompt once (module docstring)."""
    core = vl_core(model)
    original = model.generate

    def generate(input_ids=None, attention_mask=None, **kwargs):
        if input_ids is None or attention_mask is None or "past_key_values" in kwargs or input_ids.size(1) < 2:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        videos = current_video_index()  # the pixels are the distinct videos, row i holds videos[i]
        if videos is None and "pixel_values_videos" in kwargs:  # which rows share a video is unknown: no sharing
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        first, inverse = distinct_prompts(input_ids, attention_mask, videos)
        if len(first) == len(inverse):
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        video = {k: kwargs.pop(k) for k in VIDEO_KEYS if k in kwargs}
        prefill = {k: v[first] for k, v in video.items() if k in ("video_grid_thw", "second_per_grid_ts")}
        if "pixel_values_videos" in video:  # every distinct video has a distinct prompt: the pixels stay as given
            prefill["pixel_values_videos"] = video["pixel_values_videos"]
        if "mm_token_type_ids" in video:
            prefill["mm_token_type_ids"] = video["mm_token_type_ids"][first, :-1]
        index = None if videos is None else [videos[i] for i in first]
        with torch.no_grad(), video_index(index):
            out = model(input_ids=input_ids[first, :-1], attention_mask=attention_mask[first, :-1], use_cache=True,
                        **prefill)
        rows = torch.tensor(inverse, device=input_ids.device)
        cache = out.past_key_values
        cache.batch_select_indices(rows)  # each row gets its prompt's cache
        if getattr(core, "rope_deltas", None) is not None:
            core.rope_deltas = core.rope_deltas[rows]
        return original(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)

    own = model.__dict__.get("generate")  # an instance attribute already there (else the class's method)
    model.generate = generate
    try:
        yield
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own
