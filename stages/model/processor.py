"""Processor construction: load a checkpoint's processor (hub id or local path), or build Qwen2.5-VL / Qwen3-VL
processors from arguments (the tiny models, bench)."""
from __future__ import annotations


def load_processor(name_or_path: str):
    """The processor saved with a model (local folder or hub id; HF_HUB_OFFLINE decides whether a hub is asked)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(name_or_path)


def build_processor(tokenizer, min_pixels: int = 28 * 28, max_pixels: int = 768 * 28 * 28):
    """Qwen2.5-VL processors from arguments: patch 14, temporal patch 2, merge 2, CLIP normalisation."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2,
                  size={"shortest_edge": min_pixels, "longest_edge": max_pixels})
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def build_qwen3_processor(tokenizer, min_pixels: int = 32 * 32, max_pixels: int = 768 * 32 * 32,
                          max_video_pixels: int = 16384 * 32 * 32):
    """Qwen3-VL processors from arguments: patch 16, temporal patch 2, merge 2, mean/std 0.5 (Qwen3-VL's).

    Qwen3-VL's video size bounds apply to the whole clip (frames x height x width), not to one frame; the frame
    cache has already budgeted the pixels, so the bounds here are wide and only round sizes to multiples of 32."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    norm = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, temporal_patch_size=2, merge_size=2,
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **norm),
        video_processor=Qwen3VLVideoProcessor(
            patch_size=16, temporal_patch_size=2, merge_size=2, do_sample_frames=False,
            size={"shortest_edge": min_pixels, "longest_edge": max_video_pixels}, **norm),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
