"""Shared pieces of the training benchmarks (bench_train.py on CPU, bench_train_gpu.py on a GPU): a GRPO trainer
that times its phases, synthetic frame-cache clips, and the model-FLOPs count of the loss phase.

Phases of one GRPO step (TRL 1.16, one generation per optimizer step):
  generate   rollouts: model.generate for every completion of the batch
  score      the rest of the rollout: reference (and old) log-probs with the video, rewards, advantages
  loss       policy forward + backward with the video (gradient checkpointing recomputes inside it)
  optimizer  clipping, optimizer step, scheduler, zero_grad (what remains of the step)
"""
from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from stages.rl.video_grpo import VIDEO_ROWS, VideoGRPOTrainer


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PhaseClock:
    """Wall seconds per named phase, summed within a step, and the process's CPU seconds (all threads) of the
    same phase under "cpu_<name>" — on a shared machine CPU time is the steadier measure of work; one dict per
    step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            sync()
            self.current[name] += time.perf_counter() - t0
            self.current[f"cpu_{name}"] += time.process_time() - c0

    def end_step(self, total: float, cpu_total: float = 0.0) -> None:
        row = dict(self.current)
        row["step"] = total
        row["cpu_step"] = cpu_total
        row.update({f"n_{k}": v for k, v in self.counts.items()})
        self.steps.append(row)
        self.current = defaultdict(float)
        self.counts = defaultdict(float)


def timed_trainer(clock: PhaseClock, config, base=VideoGRPOTrainer):
    """A subclass of `base` (VideoGRPOTrainer; TRL's GRPOTrainer for text prompts) that reports its phases (and
    what the loss phase processed) to `clock`. `config` is the model config (for the loss-phase FLOPs)."""

    class TimedTrainer(base):
        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            with clock.phase("generate"):
                completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            clock.counts["generated_tokens"] += sum(len(c) for c in completion_ids)
            return completion_ids, logprobs

        def _prepare_inputs(self, generation_batch):
            with clock.phase("rollout"):
                return super()._prepare_inputs(generation_batch)

        def training_step(self, model, inputs, num_items_in_batch=None):
            with clock.phase("train_step"):
                return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            clock.counts["loss_tokens"] += float(mask.sum())
            clock.counts["loss_flops"] += loss_phase_flops(
                config, mask.sum(dim=1).tolist(), inputs["completion_mask"].sum(dim=1).tolist(),
                [r["video_grid_thw"][0].tolist() for r in inputs.get(VIDEO_ROWS) or []])
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return TimedTrainer


class StepTimer:
    """TrainerCallback: wall time of each optimizer step, closing the clock's step."""

    def __new__(cls, clock: PhaseClock):
        from transformers import TrainerCallback

        class _Cb(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sync()
                self.t0, self.c0 = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                sync()
                clock.end_step(time.perf_counter() - self.t0, time.process_time() - self.c0)

        return _Cb()


def split(row: dict, prefix: str = "") -> dict:
    """One step's phases as generate / score / loss / optimizer seconds (prefix "cpu_": CPU seconds)."""
    gen = row.get(f"{prefix}generate", 0.0)
    rollout = row.get(f"{prefix}rollout", 0.0)
    step_time = row.get(f"{prefix}train_step", 0.0)
    total = row[f"{prefix}step"]
    return {"generate": gen, "score": rollout - gen, "loss": step_time - rollout, "optimizer": total - step_time,
            "step": total}


# -- model FLOPs of the loss phase (forward + backward = 3 x forward, no recompute counted) -------------------

def _llm_flops(tc, seq_len: int, scored: int, causal: bool = True) -> float:
    d, h, kv = tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads
    hd = getattr(tc, "head_dim", None) or d // h
    per_token = 2 * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * tc.intermediate_size)
    attention = 4 * seq_len * seq_len * h * hd  # QK^T and AV
    if causal:  # causal kernels (sdpa, flash) skip the masked half
        attention /= 2
    layers = tc.num_hidden_layers * (seq_len * per_token + attention)
    return layers + 2 * d * tc.vocab_size * scored  # lm_head on the scored (completion) positions


def _vision_flops(vc, grid_thw: list[int]) -> float:
    t, gh, gw = grid_thw
    n = gh * gw  # patches per temporal group; attention runs within a group (and within windows)
    patches = t * n
    dv, ff, depth = vc.hidden_size, vc.intermediate_size, vc.depth
    per_patch = 2 * (4 * dv * dv + 3 * dv * ff)
    embed = 2 * 3 * vc.temporal_patch_size * vc.patch_size ** 2 * dv * patches
    full = set(getattr(vc, "fullatt_block_indexes", None) or range(depth))
    window = (getattr(vc, "window_size", 0) // vc.patch_size) ** 2 or n
    attention = sum(4 * t * n * (n if i in full else min(window, n)) * dv for i in range(depth))
    m = vc.spatial_merge_size ** 2
    merger = 2 * (patches // m) * (m * dv * m * dv + m * dv * vc.out_hidden_size)
    return depth * patches * per_patch + embed + attention + merger


def loss_phase_flops(config, seq_lens: list[int], scored: list[int], grids: list[list[int]],
                     causal: bool = True) -> float:
    """Model FLOPs of one loss forward + backward over a batch (Qwen2.5-VL layout): sequences of seq_lens tokens
    (prompt incl. video tokens + completion), `scored` completion tokens each, one video of grid (t, h, w) each.
    causal=False counts the full attention matrix (what an eager implementation multiplies)."""
    tc, vc = config.text_config, config.vision_config
    forward = sum(_llm_flops(tc, n, s, causal) for n, s in zip(seq_lens, scored, strict=True))
    forward += sum(_vision_flops(vc, g) for g in grids)
    return 3.0 * forward


def write_clips(folder: Path, n: int, frames: int, height: int, width: int, fps: float = 2.0) -> list[dict]:
    """n random clips in the frame-cache layout (<id>.npy + <id>.json timestamps); tg-style sample rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = folder / f"clip{i}.npy"
        np.save(path, rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8))
        (folder / f"clip{i}.json").write_text(json.dumps({"timestamps": [k / fps for k in range(frames)]}))
        rows.append({"id": f"s{i}", "task": "tg", "prompt": f"When does event {i} happen in the video?",
                     "frames": str(path), "fps": fps, "solution": {"timestamps": [1.0, 2.0]}})
    return rows


def length_reward(prompts, completions, **kw):
    """A reward with spread (so advantages are non-zero and the loss phase does real work)."""
    return [float(len(c[0]["content"]) % 7) for c in completions]
