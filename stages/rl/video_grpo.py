"""Video-aware GRPO on top of TRL's GRPOTrainer.

TRL 1.16 passes a video to generation but builds the loss-phase forward kwargs from images only, so with video
prompts the old/ref log-probs and the policy loss are computed WITHOUT the video (the vision tower gets no
gradient, the log-probs are those of another input) — silently. It also suppresses only the image placeholder
during sampling, so a sampled <|video_pad|> crashes the next forward.

This subclass:
- tokenizes each prompt with its cached frames (never decoding video in the loop; with an input cache, never
  re-running the processor either) and keeps the per-row video tensors (pixel_values_videos, video_grid_thw
  and, for Qwen2.5-VL, second_per_grid_ts; Qwen3-VL's frame times are already text in input_ids) with the
  rollout batch, as lists that TRL's shuffle/split move with the rows;
- injects those tensors into every log-prob forward (old, ref and policy) through a forward pre-hook around
  TRL's own chunked forward, so TRL's loss code stays untouched;
- suppresses every vision placeholder token during sampling;
- encodes each distinct video of a forward once, its features shared by the G completions that hold it, in
  generation prefill and in the reference and policy forwards (stages/model/shared_video.py);
- optionally drops groups whose rewards are all equal from the loss (stages/rl/group_filter.py), adds
  T-GRPO's temporal-contrast bonus from rollouts on frame-shuffled video (stages/rl/tgrpo.py), and puts the gold
  answer into groups whose every answer scored 0 (stages/rl/guidance.py).
Dataset rows need: prompt (conversational, text + {"type": "video"}), frames (path to .npy), fps, and
frame_times when known (stages/model/video_inputs.py); T-GRPO also task and solution.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from transformers import GenerationMixin
from trl import GRPOTrainer
from trl.trainer.utils import nanstd

from stages.model.shared_video import distinct_objects, is_shared, share_video_features, video_index
from stages.model.video_inputs import (VIDEO_FIELDS, encode, encode_sample, model_video_kwargs,
                                       placeholder_token_ids, sample_frames)
from stages.rl import box_credit
from stages.rl.group_filter import total_rewards, zero_std_rows
from stages.rl.guidance import gold_completion_ids, lost_groups
from stages.rl.rollout import make_engine
from stages.rl.tgrpo import accuracy, shuffle_frames, temporal_bonus

VIDEO_ROWS = "video_rows"  # key of the per-row video tensors in TRL's rollout batch
KEEP = "group_keep"  # key of the per-row "group carries a learning signal" mask


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


def select_rows(batch: dict, keep: torch.Tensor) -> dict:
    """The rows of a rollout batch where `keep` is True (tensors and per-row lists alike)."""
    n = keep.numel()
    idx = keep.nonzero().squeeze(1)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.size(0) == n:
            out[key] = value[idx.to(value.device)]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in idx.tolist()]
        else:
            out[key] = value
    return out


class VideoGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, reward_funcs, drop_zero_std_groups: bool = False, t_grpo=None, think: bool = True,
                 input_cache=None, rollout_engine: str = "shared_prefill", guide_lost_groups: bool = False,
                 box_credit: bool = False, task_groups: list[list[str]] | None = None, **kwargs):
        self._drop_zero_std = drop_zero_std_groups
        self._task_groups = task_groups or []
        self._box_credit = box_credit
        self._rewards_per_func: torch.Tensor | None = None  # the last rollout's gathered rewards (box credit)
        self._guide = guide_lost_groups
        self.rollout_engine = make_engine(rollout_engine)  # stages/rl/rollout.py: the seam
        self._t_grpo = t_grpo if (t_grpo is not None and t_grpo.enabled) else None
        self._think = think
        # processed inputs (stages/model/input_cache.py): None runs the processor on every rollout
        self._encode_sample = input_cache.encode_sample if input_cache is not None else encode_sample
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        self._n_task_rewards = len(reward_funcs)  # guidance scores with these (not the T-GRPO bonus)
        if self._t_grpo is not None:
            reward_funcs.append(self._bonus_reward())
        super().__init__(*args, reward_funcs=reward_funcs, **kwargs)
        blocked = placeholder_token_ids(self._tokenizer)
        suppress = sorted(set(self.generation_config.suppress_tokens or []) | set(blocked))
        self.generation_config.suppress_tokens = suppress
        if getattr(self, "generation_kwargs", None) is not None:
            self.generation_kwargs["suppress_tokens"] = suppress
        share_video_features(self.model)
        if self.ref_model is not None:
            share_video_features(self.ref_model)
        cfg = self.model.config
        self._video_token_id = cfg.video_token_id
        self._image_token_id = getattr(cfg, "image_token_id", None)
        self._pending_inputs: list[dict] | None = None
        self._active_rows: list[dict] | None = None  # video rows aligned with the input_ids being scored
        self._keep_rows: torch.Tensor | None = None
        self._generation_index: list[int] | None = None  # row -> distinct video of the next generate call
        self._generation_rows: list[dict] | None = None  # the encodings of the next generate call's rows
        self._shuffled_acc: torch.Tensor | None = None
        self.t_grpo_last: dict | None = None  # the last shuffled rollout (inspection, tests)

    def _get_train_sampler(self, dataset=None):
        if not self._task_groups:
            return super()._get_train_sampler(dataset)
        from stages.rl.task_batches import GroupedSampler, group_labels  # train.task_groups

        dataset = self.train_dataset if dataset is None else dataset
        return GroupedSampler(
            labels=group_labels(list(dataset["task"]), self._task_groups), data_source=dataset, mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset, seed=self.args.seed,
        )

    # -- rollout: tokenize with video, remember the rows -------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        self._pending_inputs = inputs
        training = self.model.training
        try:
            if self._t_grpo is not None and training:
                self._shuffled_acc = self._shuffled_rollouts(inputs)
            output = super()._generate_and_score_completions(inputs)
            if self._box_credit and training:
                output["advantages"] = self._box_advantages(inputs, output)
            output[VIDEO_ROWS] = self._active_rows
            if self._drop_zero_std and training and self._keep_rows is not None:
                output[KEEP] = self._keep_rows
        finally:
            self._pending_inputs = None
            self._active_rows = None
            self._keep_rows = None
            self._shuffled_acc = None
            self._rewards_per_func = None
        return output

    def _box_advantages(self, inputs: list[dict], output: dict) -> torch.Tensor:
        """Per-token advantages: each box of a tracking answer carries its own IoU deviation
        (stages/rl/box_credit.py). Groups are whole on a rank (a params rule)."""
        from stages import tasks as task_registry

        if self.multi_objective_aggregation != "sum_then_normalize":
            raise RuntimeError("train.box_credit needs TRL's sum_then_normalize reward aggregation")
        ids, mask = output["completion_ids"], output["completion_mask"]
        g, n = self.num_generations, ids.size(0)
        if n % g:
            raise RuntimeError(f"box_credit needs whole groups on a rank: {n} rows, G={g}")
        weights = self.reward_weights.to(self._rewards_per_func.device)
        totals = total_rewards(self._rewards_per_func, weights)
        if self.scale_rewards == "none":
            scale = torch.ones_like(totals)
        elif self.scale_rewards == "batch":
            scale = nanstd(totals).expand_as(totals) + 1e-4
        else:
            scale = nanstd(totals.view(-1, g), dim=1).repeat_interleave(g) + 1e-4
        scale = scale[self._local_slice(n)].cpu()
        names = list(self.reward_func_names)
        owners, values, weight = [], [], []
        for i in range(n):
            row = ids[i][mask[i].bool()].tolist()
            pieces = [self.processing_class.decode([t], skip_special_tokens=True) for t in row]
            text = self.processing_class.decode(row, skip_special_tokens=True)
            # the spans are located in the pieces' text; where it is not the scored text, no credit for the row
            found = (task_registry.part_spans(inputs[i]["task"], text, inputs[i]["solution"])
                     if "".join(pieces) == text else None)
            name = f"{inputs[i]['task']}_{found[0]}" if found else None
            weight.append(float(weights[names.index(name)]) if name in names else 0.0)
            owners.append(box_credit.token_owner(pieces, found[1]) if found else None)
            values.append(found[2] if found else None)
        corr: list = []
        for start in range(0, n, g):
            group = values[start:start + g]
            num = next((len(v) for v in group if v is not None), 0)
            flat = bool(torch.isclose(scale[start], torch.tensor(1e-4))) and self.scale_rewards != "none"
            corr += [None] * g if (num == 0 or flat) else box_credit.corrections(group, num)
        self._metrics["train"]["credit/rows_frac"].append(sum(c is not None for c in corr) / n)
        adv = box_credit.token_advantages(output["advantages"].cpu(), owners, corr, scale, weight, ids.size(1))
        return adv.to(output["advantages"].device)

    def _video_kwargs(self, model, rows: list[dict], input_ids: torch.Tensor):
        """Forward kwargs for per-row encodings and the row -> distinct-video index: with the shared-features
        wrapper in `model`, the pixels of each distinct video once (rows of one video hold one pixel tensor:
        _tokenize_prompts)."""
        if not is_shared(model):  # asked every time: tests and the benchmark take the wrapper off
            return model_video_kwargs(rows, input_ids, self._video_token_id, self._image_token_id), None
        first, inverse = distinct_objects([r["pixel_values_videos"] for r in rows])
        pixels_of = [rows[i] for i in first]
        return model_video_kwargs(rows, input_ids, self._video_token_id, self._image_token_id, pixels_of), inverse

    def _generation_fields(self, rows: list[dict]):
        """prompt_ids + the multimodal fields TRL's generate path expects, for per-row encodings."""
        prompt_ids = [r["input_ids"] for r in rows]
        self._generation_rows = rows
        fields, self._generation_index = self._video_kwargs(self.model, rows, torch.zeros(1, 1, dtype=torch.long))
        fields.pop("mm_token_type_ids")
        # per-token field, left-padded by TRL like input_ids; generation needs it for the 3D rope positions
        fields["mm_token_type_ids"] = [[2 if t == self._video_token_id else 0 for t in ids] for ids in prompt_ids]
        return prompt_ids, fields

    def _generate(self, prompts: list):
        out = super()._generate(prompts)
        if self._guide and self.model.training and self._pending_inputs is not None:
            out = self._guide_lost_groups(prompts, out)
        return out

    def _guide_lost_groups(self, prompts: list, out: tuple) -> tuple:
        """Replace the last completion of each local group whose answers all scored 0 by the gold answer
        (stages/rl/guidance.py). Groups are whole on a rank: the params require a per-device batch of whole groups."""
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        inputs, g = self._pending_inputs, self.num_generations
        if len(inputs) % g:
            raise RuntimeError(f"guide_lost_groups needs whole groups on a rank: {len(inputs)} rows, G={g}")
        keys = [k for k in inputs[0] if k not in ("prompt", "completion", "completion_ids")]
        kwargs = {k: [x[k] for x in inputs] for k in keys}
        columns = []
        for func in self.reward_funcs[: self._n_task_rewards]:
            scores = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
            columns.append([torch.nan if r is None else float(r) for r in scores])
        totals = total_rewards(torch.tensor(columns).T, self.reward_weights[: self._n_task_rewards].cpu())
        lost = lost_groups(totals, g)
        self._metrics["train"]["guide/guided_frac"].append(lost.float().mean().item())
        if not bool(lost.any()):
            return out
        if logprobs is not None or tool_mask is not None:
            raise RuntimeError("guide_lost_groups supports the transformers rollout path only (no sampling "
                               "log-probs, no tools)")
        completion_ids, completions = list(completion_ids), list(completions)
        tok = self._tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        end = end if end in self.eos_token_ids else self.eos_token_ids[0]
        for group in lost.nonzero().squeeze(1).tolist():
            j = group * g + g - 1
            ids = gold_completion_ids(tok, inputs[j]["task"], inputs[j]["solution"], self._think, end,
                                      self.max_completion_length)
            text = self.processing_class.batch_decode([ids], skip_special_tokens=True)[0]
            completion_ids[j] = ids
            completions[j] = [{**completions[j][0], "content": text}] if isinstance(completions[j], list) else text
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def _generate_single_turn(self, *args, **kwargs):
        with video_index(self._generation_index), self._engine_generates():
            return super()._generate_single_turn(*args, **kwargs)

    @contextlib.contextmanager
    def _engine_generates(self):
        """Route TRL's `unwrapped_model.generate(...)` to the rollout engine (peft's generate ends in the same
        Hugging Face model's generate)."""
        model = next(m for m in self.model.modules() if isinstance(m, GenerationMixin))
        original = model.generate
        patched = model.__dict__.get("generate")
        rows = self._generation_rows

        def generate(**inputs):
            config = inputs.pop("generation_config", None)
            return self.rollout_engine.generate(model, original, inputs, config, rows, self._video_kwargs)

        model.generate = generate
        try:
            yield
        finally:
            if patched is None:
                del model.generate  # back to the class's method
            else:
                model.generate = patched

    def _tokenize_prompts(self, prompts: list):
        self._generation_index = None
        self._generation_rows = None
        inputs = self._pending_inputs
        if inputs is None or "frames" not in inputs[0]:
            return super()._tokenize_prompts(prompts)
        cache: dict[tuple, dict] = {}  # the G copies of a prompt share one encoding
        videos: dict[tuple, dict] = {}  # prompts on one video share its tensors (encoded once: shared_video.py)
        rows = []
        for prompt, example in zip(prompts, inputs, strict=True):
            video = (example["frames"], float(example["fps"]), repr(example.get("frame_times")))
            key = (*video, repr(prompt))
            if key not in cache:  # a frames error names the file and the sample
                row = self._encode_sample(self.processing_class, example, prompt)
                same = videos.setdefault(video, row)
                cache[key] = {**row, **{k: same[k] for k in VIDEO_FIELDS if k in row}}
            rows.append(cache[key])
        self._active_rows = rows
        prompt_ids, fields = self._generation_fields(rows)
        return prompt_ids, None, fields

    # -- rewards: group filter mask; T-GRPO bonus ---------------------------------------------------------
    def _local_slice(self, n: int) -> slice:
        i = self.accelerator.process_index
        return slice(i * n, (i + 1) * n)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered
        self._rewards_per_func = rewards_per_func
        if self._drop_zero_std and self.model.training:
            flat = zero_std_rows(total_rewards(rewards_per_func, self.reward_weights), self.num_generations)
            self._metrics["train"]["filter/dropped_frac"].append(flat.float().mean().item())
            self._keep_rows = ~flat[self._local_slice(len(prompts))]
        return rewards_per_func

    def _shuffled_rollouts(self, inputs: list[dict]) -> torch.Tensor:
        """One rollout on frame-shuffled video per two ordered rows (G/2 per group); returns each row's shuffled
        accuracy at even positions, NaN elsewhere. Frames come from the frame cache, shuffled in memory."""
        picks = list(range(0, len(inputs), 2))
        rows, orders = [], []
        for i in picks:
            example = inputs[i]
            frames = sample_frames(example)
            rng = np.random.default_rng([self.args.seed, self.state.global_step, self.accelerator.process_index, i])
            shuffled, order = shuffle_frames(frames.array, rng)
            # the shuffled clip keeps the ordered clip's time labels
            rows.append(encode(self.processing_class, example["prompt"], shuffled, example["fps"], frames.times))
            orders.append(order)
        prompt_ids, fields = self._generation_fields(rows)
        completion_ids, _ = self._generate_single_turn(prompt_ids, None, fields, len(rows))
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        acc = torch.full((len(inputs),), float("nan"))
        for i, text in zip(picks, texts, strict=True):
            acc[i] = accuracy(inputs[i]["task"], text, inputs[i]["solution"], self._think)
        self.t_grpo_last = {"picks": picks, "orders": orders, "rows": rows, "texts": texts, "accuracy": acc}
        return acc

    def _bonus_reward(self):
        trainer = self

        def t_grpo_bonus(prompts, completions, task=None, solution=None, **kwargs):
            n = len(completions)
            if trainer._shuffled_acc is None:  # evaluation batches have no shuffled rollouts
                return [0.0] * n
            device = trainer.accelerator.device
            ordered = torch.tensor([accuracy(t, c, s, trainer._think) for c, t, s in zip(
                completions, task, solution, strict=True)], device=device)
            all_ordered = trainer.accelerator.gather(ordered)
            all_shuffled = trainer.accelerator.gather(trainer._shuffled_acc.to(device))
            g = trainer.num_generations
            spec = trainer._t_grpo
            bonus = temporal_bonus(all_ordered.view(-1, g), all_shuffled.view(-1, g),
                                   spec.ratio, spec.bonus, spec.min_accuracy)
            metrics = trainer._metrics["train"]
            metrics["t_grpo/ordered_accuracy"].append(all_ordered.mean().item())
            metrics["t_grpo/shuffled_accuracy"].append(torch.nanmean(all_shuffled).item())
            metrics["t_grpo/rewarded_frac"].append((bonus > 0).float().mean().item())
            return bonus.view(-1)[trainer._local_slice(n)].tolist()

        return t_grpo_bonus

    # -- resume: restore the weights for real ---------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """transformers 5.23 saves Qwen-VL checkpoints in the hub's key layout (model.layers..., visual...) but
        resumes with a plain load_state_dict(strict=False) against the module layout (model.language_model...):
        no key matches, nothing loads, and training silently continues from the base weights
        (transformers#43701). Full-weight checkpoints are therefore read back through from_pretrained, which
        maps the keys, and copied in strictly; adapters and sharded-engine checkpoints keep transformers' path."""
        from pathlib import Path

        from peft import PeftModel

        target = model if model is not None else self.model
        ckpt = Path(resume_from_checkpoint)
        full = (ckpt / "model.safetensors").exists() or (ckpt / "model.safetensors.index.json").exists()
        if not full or isinstance(target, PeftModel) or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(target).from_pretrained(str(ckpt), dtype=target.dtype, device_map=None)
        target.load_state_dict(saved.state_dict(), strict=True)
        del saved

    # -- every log-prob forward sees the video ------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        keep = inputs.get(KEEP)
        scale = 1.0
        if keep is not None and not bool(keep.all()):
            if bool(keep.any()):
                inputs = select_rows(inputs, keep)
            else:  # nothing to learn on this rank: keep the forward (collectives, DDP hooks), zero the loss
                scale = 0.0
        self._active_rows = inputs.get(VIDEO_ROWS)
        try:
            return super()._compute_loss(model, inputs) * scale
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
            extra, index = self._video_kwargs(model, rows[start:end], ids)
            with inject_kwargs(model, extra), video_index(index):
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
