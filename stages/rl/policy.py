"""The policy for training: model + processor from a hub id or a local path, with the memory options applied
(bf16 on GPU, frozen vision tower, LoRA config). Qwen2.5-VL and Qwen3-VL load through the same Auto classes."""
from __future__ import annotations

import torch

FAMILY_OF_MODEL_TYPE = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def load(model_p, bf16: bool, use_cpu: bool):
    """(model, processor). Checks that model.family matches the checkpoint, so a mislabelled run fails early."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(model_p.name_or_path)
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ValueError(f"model {model_p.name_or_path!r}: model_type {config.model_type!r} is not supported "
                         f"(supported: {sorted(FAMILY_OF_MODEL_TYPE)})")
    if family != model_p.family:
        raise ValueError(f"model {model_p.name_or_path!r} is {family}, but model.family says {model_p.family}")
    processor = AutoProcessor.from_pretrained(model_p.name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        model_p.name_or_path,
        dtype=torch.bfloat16 if (bf16 and not use_cpu) else torch.float32,
        attn_implementation=model_p.attn_implementation,
    )
    return model, processor


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


def merge_lora(base_name_or_path: str, adapter_dir: str, out_dir: str, dtype=torch.float32) -> None:
    """Base model + saved adapter -> one merged model in out_dir (safetensors), loadable without peft."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_name_or_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
