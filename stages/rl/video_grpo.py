"""Video-aware GRPO on top of TRL's GRPOTrainer.

TRL 1.16 passes a video to generation but builds the loss-phase forward kwargs from images only, so with video
prompts the old/ref log-probs and the policy loss are computed WITHOUT the video (the vision tower gets no
gradient, the log-probs are those of another input) — silently. It also suppresses only the image placeholder
during sampling, so a sampled <|video_pad|> crashes the next forward.

This subclass:
- tokenizes each prompt with its cached frames (never decoding video in the loop) and keeps the per-row video
  tensors (pixel_values_videos, video_grid_thw, second_per_grid_ts) with the rollout batch, as lists that
  TRL's shuffle/split move together with the rows;
- injects those tensors into every log-prob forward (old, ref and policy) through a forward pre-hook around
  TRL's own chunked forward, so TRL's loss code stays untouched;
- suppresses every vision placeholder token during sampling.
Dataset rows need: prompt (conversational, text + {"type": "video"}), frames (path to .npy), fps.
"""
from __future__ import annotations

import contextlib

import torch
from trl import GRPOTrainer

from stages.rl.video_inputs import encode, load_frames, model_video_kwargs, placeholder_token_ids

VIDEO_ROWS = "video_rows"  # key of the per-row video tensors in TRL's rollout batch


@contextlib.contextmanager
def inject_kwargs(module: torch.nn.Module, extra: dict):
    """Add `extra` to the keyword arguments of every call of `module` inside the block."""

    def hook(_mod, args, kwargs):
        return args, {**kwargs, **extra}

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class VideoGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        blocked = placeholder_token_ids(self._tokenizer)
        suppress = sorted(set(self.generation_config.suppress_tokens or []) | set(blocked))
        self.generation_config.suppress_tokens = suppress
        if getattr(self, "generation_kwargs", None) is not None:
            self.generation_kwargs["suppress_tokens"] = suppress
        cfg = self.model.config
        self._video_token_id = cfg.video_token_id
        self._image_token_id = getattr(cfg, "image_token_id", None)
        self._pending_inputs: list[dict] | None = None
        self._active_rows: list[dict] | None = None  # video rows aligned with the input_ids being scored

    # -- rollout: tokenize with video, remember the rows -------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        self._pending_inputs = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
            output[VIDEO_ROWS] = self._active_rows
        finally:
            self._pending_inputs = None
            self._active_rows = None
        return output

    def _tokenize_prompts(self, prompts: list):
        inputs = self._pending_inputs
        if inputs is None or "frames" not in inputs[0]:
            return super()._tokenize_prompts(prompts)
        cache: dict[tuple, dict] = {}  # the G copies of a prompt share one encoding
        rows = []
        for prompt, example in zip(prompts, inputs, strict=True):
            key = (example["frames"], float(example["fps"]), repr(prompt))
            if key not in cache:
                cache[key] = encode(self.processing_class, prompt, load_frames(example["frames"]), example["fps"])
            rows.append(cache[key])
        self._active_rows = rows
        prompt_ids = [r["input_ids"] for r in rows]
        fields = model_video_kwargs(rows, torch.zeros(1, 1, dtype=torch.long), self._video_token_id, None)
        fields.pop("mm_token_type_ids")
        # per-token field, left-padded by TRL like input_ids; generation needs it for the 3D rope positions
        fields["mm_token_type_ids"] = [[2 if t == self._video_token_id else 0 for t in ids] for ids in prompt_ids]
        return prompt_ids, None, fields

    # -- every log-prob forward sees the video ------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        self._active_rows = inputs.get(VIDEO_ROWS)
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._active_rows = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False, **kw):
        rows = self._active_rows
        if rows is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **kw
            )
        if len(rows) != input_ids.size(0):
            raise RuntimeError(f"video rows ({len(rows)}) do not line up with the batch ({input_ids.size(0)})")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids = input_ids[start:end]
            extra = model_video_kwargs(rows[start:end], ids, self._video_token_id, self._image_token_id)
            with inject_kwargs(model, extra):
                lp, ent, ax = super()._get_per_token_logps_and_entropies(
                    model, ids, attention_mask[start:end], logits_to_keep, end - start,
                    compute_entropy, compute_aux_loss, **kw,
                )
            logps.append(lp)
            if ent is not None:
                entropies.append(ent)
            if ax is not None:
                aux.append(ax)
        return (
            torch.cat(logps),
            torch.cat(entropies) if entropies else None,
            torch.stack(aux).mean() if aux else None,
        )
