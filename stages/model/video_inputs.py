"""Turn a chat prompt + cached frames into model inputs. Used by training (rollouts and loss forward), SFT and
evaluation, so the model sees the video the same way in all of them.

Frames come already sampled and resized from the frame cache (stage extract_frames; read by
stages/video/frames.py); the processor only normalises and patchifies them (Qwen3-VL's processor also rounds sizes
to its patch 16 x merge 2). The frame timing travels as video metadata: Qwen2.5-VL turns the sampled fps into
second_per_grid_ts = temporal_patch_size / fps (absolute time in its position ids); Qwen3-VL writes each frame
group's timestamp into the prompt text ("<1.2 seconds>"), taken from the frames' real times when they are known.

A sample row carries those times (frame_times, written by build_samples from the frame meta). A row without them
(a samples file written before frame_times existed, a row made by hand) falls back to the frame cache's meta
beside the frames file, and frames without meta to frame i at i / fps: the inputs are the same either way.
"""
from __future__ import annotations

import numpy as np
import torch

from stages.video.frames import Frames, read_cached

VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
# per-video tensors a processor may return next to input_ids; each is concatenated over the videos of a batch
VIDEO_FIELDS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def sample_frames(row: dict) -> Frames:
    """The frames of a sample row and their times: from the row when it carries frame_times, else from the frame
    cache's meta (module docstring). Errors name the file and the sample."""
    item = f"sample {row['id']!r}" if row.get("id") is not None else None
    times = row.get("frame_times")
    if times is None:
        return read_cached(row["frames"], item)
    return read_cached(row["frames"], item, meta=False)._replace(times=[float(t) for t in times])


def encode_sample(processor, row: dict, messages: list[dict] | None = None) -> dict:
    """encode() of a sample row (prompt, frames, fps, frame_times); `messages` default to the row's prompt text
    as the single video turn."""
    frames = sample_frames(row)
    return encode(processor, messages or video_message(row["prompt"]), frames.array, row["fps"], frames.times)


def video_message(text: str) -> list[dict]:
    """The single user turn of every task: the text, then the video (reference section 3)."""
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "video"}]}]


def placeholder_token_ids(tokenizer) -> list[int]:
    """Vision placeholder ids the policy must never sample (a sampled <|video_pad|> breaks the forward)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS]
    return sorted({i for i in ids if i is not None and i != unk})


def encode(processor, messages: list[dict], frames: np.ndarray, fps: float,
           timestamps: list[float] | None = None) -> dict:
    """One prompt with its video -> input_ids (1-D list) and the video tensors of that one video.

    `timestamps` (seconds per frame; None: frame i sits at i / fps) only change Qwen3-VL's text time stamps: the
    sampled fps stays `fps` either way, so Qwen2.5-VL's second_per_grid_ts is temporal_patch_size / fps."""
    from transformers.video_utils import VideoMetadata

    n = int(frames.shape[0])
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


def model_video_kwargs(rows: list[dict], input_ids: torch.Tensor, video_token_id: int, image_token_id: int | None,
                       pixels_of: list[dict] | None = None):
    """Forward kwargs for a batch whose row i holds the video rows[i] (one video per row). `pixels_of`: the rows
    whose pixels to pass instead of every row's (the distinct videos: stages/model/shared_video.py)."""
    device = input_ids.device
    mm = torch.zeros_like(input_ids, dtype=torch.int32)
    mm[input_ids == video_token_id] = 2
    if image_token_id is not None:
        mm[input_ids == image_token_id] = 1
    pixels = rows if pixels_of is None else pixels_of
    kwargs = {key: torch.cat([r[key] for r in (pixels if key == "pixel_values_videos" else rows)]).to(device)
              for key in VIDEO_FIELDS if key in rows[0]}
    kwargs["mm_token_type_ids"] = mm
    return kwargs
