"""The training-only parts of the policy: the frozen vision tower and the LoRA config (loading and the LoRA
merge are model I/O: stages/model/load.py)."""
from __future__ import annotations

import torch


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder (patch embed, blocks, merger) of a Qwen-VL model, wrapped or not."""
    found = [(name, mod) for name, mod in model.named_modules() if name.split(".")[-1] == "visual"]
    if not found:
        raise ValueError(f"{type(model).__name__} has no `visual` module")
    return min(found, key=lambda nm: len(nm[0]))[1]


def freeze_vision_tower(model) -> int:
    """requires_grad=False on every vision-tower parameter; returns how many parameters were frozen."""
    params = list(vision_tower(model).parameters())
    for p in params:
        p.requires_grad_(False)
    return sum(getattr(p, "ds_numel", p.numel()) for p in params)  # ZeRO-3 partitions: the full size


def lora_config(lora_p):
    """peft LoraConfig from LoraParams (None when LoRA is off)."""
    if not lora_p.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora_p.r, lora_alpha=lora_p.alpha, lora_dropout=lora_p.dropout,
        target_modules=list(lora_p.target_modules), exclude_modules=lora_p.exclude_modules,
        bias="none", task_type="CAUSAL_LM",
    )
