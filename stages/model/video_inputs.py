"""Turn a chat prompt + cached frames into model inputs. Used by training (rollouts and loss forward) and by
evaluation, so the model sees the video the same way in both.

Frames come already sampled and resized from the frame cache (stage extract_frames); the processor only
normalises and patchifies them (Qwen3-VL's processor also rounds sizes to its patch 16 x merge 2). The frame
timing travels as video metadata: Qwen2.5-VL turns the sampled fps into second_per_grid_ts = temporal_patch_size /
fps (absolute time in its position ids); Qwen3-VL writes each frame group's timestamp into the prompt text
("<1.2 seconds>"), taken from the frame cache's real timestamps when they are known.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
# per-video tensors a processor may return next to input_ids; each is concatenated over the videos of a batch
VIDEO_FIELDS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


class FramesError(ValueError):
    """A sample's frames file cannot be used; the message names the file and the sample."""


@lru_cache(maxsize=256)
def _load(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def load_frames(path: str, sample_id: str | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 from the frame cache (memory-mapped .npy). A file that is missing, cut short
    (numpy's "mmap length is greater than file size") or not a frame array raises FramesError naming the file and,
    when given, the sample that uses it."""
    try:
        frames = _load(path)
    except (OSError, ValueError, EOFError) as e:
        raise FramesError(_unusable(path, sample_id, f"{type(e).__name__}: {e}")) from e
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise FramesError(_unusable(path, sample_id, f"holds {frames.dtype} {frames.shape}, not uint8 (T, H, W, 3)"))
    return frames


def _unusable(path: str, sample_id: str | None, why: str) -> str:
    who = f"sample {sample_id!r}: " if sample_id is not None else ""
    return f"{who}frames file {path} unusable ({why}); run extract_frames again (dvc repro extract_frames)"


@lru_cache(maxsize=4096)
def load_timestamps(path: str) -> tuple[float, ...] | None:
    """Seconds of each cached frame, from the frame cache's sidecar <video>.json; None when it is not there."""
    meta = Path(path).with_suffix(".json")
    try:
        stamps = json.loads(meta.read_text()).get("timestamps")
    except (OSError, json.JSONDecodeError):
        return None
    return tuple(float(t) for t in stamps) if stamps else None


def video_message(text: str) -> list[dict]:
    """The single user turn of every task: the text, then the video (reference section 3)."""
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "video"}]}]


def placeholder_token_ids(tokenizer) -> list[int]:
    """Vision placeholder ids the policy must never sample (a sampled <|video_pad|> breaks the forward)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS]
    return sorted({i for i in ids if i is not None and i != unk})


def _timestamps_of(frames: np.ndarray, n: int) -> list[float] | None:
    """Real frame times when `frames` is a memory-mapped frame-cache file (load_frames), else None."""
    name = getattr(frames, "filename", None)
    stamps = load_timestamps(str(name)) if name else None
    return list(stamps) if stamps and len(stamps) == n else None


def encode(processor, messages: list[dict], frames: np.ndarray, fps: float,
           timestamps: list[float] | None = None) -> dict:
    """One prompt with its video -> input_ids (1-D list) and the video tensors of that one video.

    `timestamps` (seconds per frame) default to the frame cache's sidecar when `frames` came from load_frames, else
    frame i sits at i / fps. They only change Qwen3-VL's text time stamps: the sampled fps stays `fps` either way,
    so Qwen2.5-VL's second_per_grid_ts is temporal_patch_size / fps as before."""
    from transformers.video_utils import VideoMetadata

    n = int(frames.shape[0])
    if timestamps is None:
        timestamps = _timestamps_of(frames, n)
    if timestamps is not None and len(timestamps) != n:
        raise ValueError(f"{len(timestamps)} timestamps for {n} frames")
    fps = float(fps)
    # frames_indices / fps are the frame times (what Qwen3-VL prints); len(indices) / total * fps = fps (Qwen2.5)
    indices = [t * fps for t in timestamps] if timestamps is not None else list(range(n))
    meta = VideoMetadata(total_num_frames=n, fps=fps, duration=n / fps, frames_indices=indices)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {}
    if hasattr(processor.video_processor, "max_video_tokens"):  # Qwen3-VL: frames are budgeted by the frame cache
        kwargs["cap_pixels_per_frame"] = False
    out = processor(text=[text], videos=[np.ascontiguousarray(frames)], video_metadata=[meta],
                    do_sample_frames=False, return_tensors="pt", **kwargs)
    row = {"input_ids": out["input_ids"][0].tolist()}
    for key in VIDEO_FIELDS:
        if key in out:
            value = torch.as_tensor(out[key])
            row[key] = value.to(torch.float32).reshape(1) if key == "second_per_grid_ts" else value
    return row


def model_video_kwargs(rows: list[dict], input_ids: torch.Tensor, video_token_id: int, image_token_id: int | None):
    """Forward kwargs for a batch whose row i holds the video rows[i] (one video per row)."""
    device = input_ids.device
    mm = torch.zeros_like(input_ids, dtype=torch.int32)
    mm[input_ids == video_token_id] = 2
    if image_token_id is not None:
        mm[input_ids == image_token_id] = 1
    kwargs = {key: torch.cat([r[key] for r in rows]).to(device) for key in VIDEO_FIELDS if key in rows[0]}
    kwargs["mm_token_type_ids"] = mm
    return kwargs


def shuffle_frames(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(a copy of `frames` in a random order that is never the original one, that order) — T-GRPO's contrast."""
    n = int(frames.shape[0])
    order = rng.permutation(n)
    if n > 1 and (order == np.arange(n)).all():
        order = np.roll(order, 1)
    return np.ascontiguousarray(frames[order]), order
