"""Loading a model with its processor, from a hub id or a local path. Qwen2.5-VL and Qwen3-VL load through the
same Auto classes; a LoRA adapter is merged into its base here so every loader reads one plain checkpoint."""
from __future__ import annotations

import torch

from stages.model.processor import load_processor

FAMILY_OF_MODEL_TYPE = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def load_model(name_or_path: str, device: str | None = None):
    """(model, processor) for inference: on `device` (CUDA when there is one), bf16 on CUDA else fp32, eval mode.
    HF_HUB_OFFLINE decides whether a hub is asked."""
    from transformers import AutoModelForImageTextToText

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    processor = load_processor(name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    return model, processor


def load_for_training(model_p, bf16: bool, use_cpu: bool):
    """(model, processor) for training (the trainer places it). Checks that model.family matches the checkpoint,
    so a mislabelled run fails early."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_p.name_or_path)
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ValueError(f"model {model_p.name_or_path!r}: model_type {config.model_type!r} is not supported "
                         f"(supported: {sorted(FAMILY_OF_MODEL_TYPE)})")
    if family != model_p.family:
        raise ValueError(f"model {model_p.name_or_path!r} is {family}, but model.family says {model_p.family}")
    processor = load_processor(model_p.name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        model_p.name_or_path,
        dtype=torch.bfloat16 if (bf16 and not use_cpu) else torch.float32,
        attn_implementation=model_p.attn_implementation,
    )
    return model, processor


def merge_lora(base_name_or_path: str, adapter_dir: str, out_dir: str, dtype=torch.float32) -> None:
    """Base model + saved adapter -> one merged model in out_dir (safetensors), loadable without peft."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_name_or_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
