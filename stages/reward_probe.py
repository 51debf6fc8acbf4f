"""Did the training reward rise? The same training prompts, sampled by the base and by the candidate as GRPO samples
them (train's temperature, top_p, top_k and completion budget), each completion scored with the training reward
(the sum of the task's reward parts); per task, the mean over prompts of candidate minus base with a paired
bootstrap interval over the prompts.

The training curves average different prompts in every logging window, so prompt difficulty swamps a gain of a few
hundredths (tg's windows differ by +-0.15 around a +0.04 gain); paired on the same prompts, it is resolved
(docs/base-model.md, twelfth round). Used by evaluate (`evaluate.reward_probe`) and bench/reward_probe.py.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import numpy as np

from stages import tasks as task_registry
from stages.bootstrap import percentile_interval


@dataclass(frozen=True)
class Sampling:
    """How GRPO samples (params.yaml's train section)."""

    generations: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    think: bool


def probe_rows(rows: list[dict], task: str, n: int, seed: int) -> list[dict]:
    """n distinct training prompts of the task (a row repeated by build_samples.weights counts once), seeded."""
    unique = {r["id"]: r for r in rows if r["task"] == task}
    ids = sorted(unique)
    random.Random(f"{seed}/{task}").shuffle(ids)
    return [unique[i] for i in ids[:n]]


def sample_rewards(model, processor, rows: list[dict], s: Sampling, seed: int, input_cache=None,
                   batch: int = 4) -> list[dict]:
    """Per row: the mean training reward of s.generations sampled completions and the mean of each reward part.
    `batch` prompts (x generations) per generate call, left-padded. Seeded: the same model, rows, seed and batch
    give the same samples on the same device."""
    import torch

    from stages.model.generate import left_padded
    from stages.model.shared_video import share_video_features
    from stages.model.video_inputs import encode_sample, model_video_kwargs, placeholder_token_ids

    share_video_features(model)
    encode = input_cache.encode_sample if input_cache is not None else encode_sample
    tok, cfg = processor.tokenizer, model.config
    device = next(model.parameters()).device
    g = s.generations
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out = []
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            enc = [e for r in chunk for e in [encode(processor, r)] * g]
            ids, mask = left_padded(enc, tok.pad_token_id, device)
            width = ids.shape[1]
            video = model_video_kwargs(enc, ids, cfg.video_token_id, getattr(cfg, "image_token_id", None))
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=mask, **video, do_sample=True,
                                     temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, num_beams=1,
                                     max_new_tokens=s.max_new_tokens, suppress_tokens=placeholder_token_ids(tok),
                                     pad_token_id=tok.pad_token_id, eos_token_id=cfg.text_config.eos_token_id)
            texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
            for j, row in enumerate(chunk):
                parts = [task_registry.score(row["task"], t, row["solution"], s.think) for t in texts[j * g:(j + 1) * g]]
                out.append({"id": row["id"], "reward": statistics.fmean(sum(p.values()) for p in parts),
                            "parts": {k: statistics.fmean(p[k] for p in parts) for k in parts[0]}})
    finally:
        torch.random.set_rng_state(generator_state)
    return out


def paired(model: list[dict], base: list[dict], level: float, resamples: int, seed: int) -> dict:
    """Mean over prompts of model - base reward, with a percentile bootstrap interval over the prompts."""
    if len(model) != len(base) or not model:
        raise ValueError(f"paired rewards need the same prompts on both sides, got {len(model)} and {len(base)}")
    d = np.array([m["reward"] - b["reward"] for m, b in zip(model, base)])
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    lo, hi = percentile_interval(d[idx].mean(axis=1), level)
    return {"delta": float(d.mean()), "lo": lo, "hi": hi, "prompts": len(d)}


def means(rows: list[dict]) -> dict[str, float]:
    """Mean reward and mean of each part over the probed prompts."""
    return {"reward": statistics.fmean(r["reward"] for r in rows),
            **{k: statistics.fmean(r["parts"][k] for r in rows) for k in rows[0]["parts"]}}


def verdict(d: dict) -> str:
    return "rose" if d["lo"] > 0 else ("FELL" if d["hi"] < 0 else "no significant change")


def probe(candidate, base, train_rows: list[dict], prompts: dict[str, int], s: Sampling, level: float,
          resamples: int, seed: int, input_cache=None) -> dict[str, dict]:
    """candidate and base are (model, processor) pairs. Per task of `prompts` that has training rows: both models'
    mean reward and parts, the paired difference with its interval, and the verdict."""
    out = {}
    for task, n in prompts.items():
        chosen = probe_rows(train_rows, task, n, seed)
        if not chosen:
            continue
        ref = sample_rewards(*base, chosen, s, seed, input_cache)
        got = sample_rewards(*candidate, chosen, s, seed, input_cache)
        d = paired(got, ref, level, resamples, seed)
        out[task] = {"baseline": means(ref), "candidate": means(got), **d, "level": level,
                     "generations": s.generations, "verdict": verdict(d)}
    return out
