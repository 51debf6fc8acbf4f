"""Turn a chat prompt + cached frames into model inputs. Used by training (rollouts and loss forward) and by
evaluation, so the model sees the video the same way in both.

Frames come already sampled and resized from the frame cache (stage extract_frames); the processor only
normalises and patchifies them. The sampled fps travels as video metadata, so Qwen2.5-VL gets
second_per_grid_ts = temporal_patch_size / fps (absolute time in its position ids).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


@lru_cache(maxsize=256)
def load_frames(path: str) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 from the frame cache (memory-mapped .npy)."""
    return np.load(path, mmap_mode="r")


def video_message(text: str) -> list[dict]:
    """The single user turn of every task: the text, then the video (reference section 3)."""
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "video"}]}]


def placeholder_token_ids(tokenizer) -> list[int]:
    """Vision placeholder ids the policy must never sample (a sampled <|video_pad|> breaks the forward)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS]
    return sorted({i for i in ids if i is not None and i != unk})


def encode(processor, messages: list[dict], frames: np.ndarray, fps: float) -> dict:
    """One prompt with its video -> input_ids (1-D list) and the video tensors of that one video."""
    from transformers.video_utils import VideoMetadata

    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    frames = np.ascontiguousarray(frames)
    n = int(frames.shape[0])
    meta = VideoMetadata(total_num_frames=n, fps=float(fps), duration=n / float(fps), frames_indices=list(range(n)))
    out = processor(
        text=[text], videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt"
    )
    return {
        "input_ids": out["input_ids"][0].tolist(),
        "pixel_values_videos": out["pixel_values_videos"],
        "video_grid_thw": out["video_grid_thw"],  # (1, 3)
        "second_per_grid_ts": torch.as_tensor(out["second_per_grid_ts"], dtype=torch.float32).reshape(1),
    }


def model_video_kwargs(rows: list[dict], input_ids: torch.Tensor, video_token_id: int, image_token_id: int | None):
    """Forward kwargs for a batch whose row i holds the video rows[i] (one video per row)."""
    device = input_ids.device
    mm = torch.zeros_like(input_ids, dtype=torch.int32)
    mm[input_ids == video_token_id] = 2
    if image_token_id is not None:
        mm[input_ids == image_token_id] = 1
    return {
        "pixel_values_videos": torch.cat([r["pixel_values_videos"] for r in rows]).to(device),
        "video_grid_thw": torch.cat([r["video_grid_thw"] for r in rows]).to(device),
        "second_per_grid_ts": torch.cat([r["second_per_grid_ts"] for r in rows]).to(device),
        "mm_token_type_ids": mm,
    }
