"""Stage sft: optional supervised warm start before GRPO.

Targets are answers written the way the prompt asks (a short think block, then the answer blocks): the gold ones
(a stand-in for the perception a pretrained model brings) or ones drawn from each task's prior (`format`: the
layout only). The video reaches the loss exactly as in training (frames from the cache, sampled fps as video
metadata). Off in the real recipe (VideoChat-R1 does RL straight from the instruct model); on in the CPU
micro-reproduction, which trains it on samples GRPO never sees.
When off, the stage writes only models/sft/sft.json saying so, and train starts from model.name_or_path.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Callable

from stages.io import read_jsonl, write_json
from stages.params import ModelParams, SftParams, load_params
from stages.tasks import prior_solution, target_text


def start_model(params) -> str:
    """The model GRPO starts from, which evaluate compares the candidate against: the warm start when on."""
    return params.sft.out_dir if params.sft.enabled else params.model.name_or_path


def select_rows(rows: list[dict], per_task: int | None, seed: int) -> list[dict]:
    """At most `per_task` rows of each task (seeded, each sample id once)."""
    rng = random.Random(seed)
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task in sorted(by_task):
        group = sorted(by_task[task], key=lambda r: r["id"])
        unique = list({r["id"]: r for r in group}.values())
        rng.shuffle(unique)
        out += unique[:per_task] if per_task else unique
    return out


def encode_example(processor, row: dict, think: bool, solution: dict | None = None):
    """(input_ids, labels, video rows) for one sample: loss only on the answer tokens (+ end of turn)."""
    import torch

    from stages.model.video_inputs import encode_sample

    enc = encode_sample(processor, row)
    tok = processor.tokenizer
    target = target_text(row["task"], solution or row["solution"], think)
    answer = tok(target, add_special_tokens=False)["input_ids"]
    answer = answer + [tok.convert_tokens_to_ids("<|im_end|>")]
    ids = enc["input_ids"] + answer
    labels = [-100] * len(enc["input_ids"]) + answer
    return torch.tensor(ids), torch.tensor(labels), enc


def sft_loss(model, processor, batch: list[tuple], video_token_id: int, per_row: bool = False):
    """Mean token cross-entropy of a right-padded batch, the video in the forward. per_row: each row's own token
    mean, then the mean over rows, so that an 84-token tracking answer weighs as much as a 9-token tg answer."""
    import torch

    from stages.model.video_inputs import model_video_kwargs

    width = max(len(ids) for ids, _, _ in batch)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab, _) in enumerate(batch):
        input_ids[i, : len(ids)], labels[i, : len(ids)], mask[i, : len(ids)] = ids, lab, 1
    device = next(model.parameters()).device
    input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
    video = model_video_kwargs([enc for _, _, enc in batch], input_ids, video_token_id, None)
    if not per_row:
        return model(input_ids=input_ids, attention_mask=mask, labels=labels, **video).loss
    logits = model(input_ids=input_ids, attention_mask=mask, **video).logits[:, :-1].float()
    target = labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
    counts = (target != -100).sum(dim=1).clamp(min=1)
    return (tokens.sum(dim=1) / counts).mean()


def fit(model, processor, examples: list[tuple], lr: float, epochs: int, batch_size: int, rng: random.Random,
        on_epoch: Callable[[int, list[float]], None] | None = None, per_row: bool = False) -> list[float]:
    """AdamW on the answer tokens, a fresh shuffle per epoch, grad norm clipped at 1; the loss of every step.
    on_epoch(epoch, that epoch's losses) runs after each epoch (1-based): recipes/warm_start_probe.py evaluates there.
    per_row: sft_loss's row-balanced mean."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(examples)))
        rng.shuffle(order)
        first = len(losses)
        for start in range(0, len(order), batch_size):
            loss = sft_loss(model, processor, [examples[i] for i in order[start:start + batch_size]],
                            model.config.video_token_id, per_row)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        if on_epoch is not None:
            on_epoch(epoch, losses[first:])
    return losses


def run(p: SftParams, model_p: ModelParams, samples_path: str, think: bool = True) -> dict:
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not p.enabled:
        summary = {"enabled": False, "model": model_p.name_or_path}
        write_json(out / "sft.json", summary)
        return summary

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(p.seed)
    processor = AutoProcessor.from_pretrained(model_p.name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(model_p.name_or_path, dtype=torch.float32)
    model.train()
    rows = select_rows([r for r in read_jsonl(samples_path) if r["task"] in p.tasks], p.max_samples_per_task, p.seed)
    rng = random.Random(p.seed)
    examples = [
        encode_example(processor, r, think, None if p.targets == "gold" else prior_solution(r["task"], r, rng))
        for r in rows
    ]
    steps = p.epochs * math.ceil(len(examples) / p.batch_size)
    t0 = time.time()
    losses = fit(model, processor, examples, p.learning_rate, p.epochs, p.batch_size, rng)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    summary = {
        "enabled": True, "model": str(out), "base_model": model_p.name_or_path, "targets": p.targets,
        "examples": len(examples),
        "steps": steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "seconds": round(time.time() - t0, 2),
    }
    write_json(out / "sft.json", summary)
    return summary


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = load_params()
    s = run(params.sft, params.model, os.path.join(params.build_samples.out_dir, "train.jsonl"),
            params.build_samples.think)
    if s["enabled"]:
        print(f"sft: {s['steps']} steps on {s['examples']} examples, loss {s['first_loss']:.3f} -> "
              f"{s['last_loss']:.3f} in {s['seconds']} s -> {s['model']}")
    else:
        print(f"sft: off; train starts from {s['model']}")


if __name__ == "__main__":
    main()
