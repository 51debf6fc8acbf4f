"""Build a tiny Qwen2.5-VL or Qwen3-VL offline: random weights from a config, a BPE tokenizer trained here with
Qwen's special tokens and a chat template, and processors built from arguments. Saved with save_pretrained, so
every loader in the project treats it exactly like a downloaded checkpoint (local path) — the real one is a hub id
away.

The two families differ where the trainer must care: Qwen2.5-VL has vision patch 14 and gets the frame rate as
second_per_grid_ts; Qwen3-VL has vision patch 16, deepstack features and writes each frame group's timestamp into
the prompt text ("<1.2 seconds>"), so it needs video metadata (fps + frame indices) instead.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.model.processor import build_processor, build_qwen3_processor

# Qwen2.5-VL special tokens, in Qwen's order (ids follow the base vocabulary here, not 151643+).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "tasks" / "prompts"

# Words the tiny model's BPE should encode compactly: answer syntax, numbers, the synthetic vocabulary.
BASE_CORPUS = """
<think> </think> <answer> </answer> <glue> </glue> 12.54 to 17.83 0.25 to 3.50 [(1.5, 4.0), (6.0, 8.5)]
[[0.093, 0.0, 0.8, 0.797], [0.095, 0.0, 0.8, 0.79]] (A) (B) (C) (D) (E) A B C D E The answer is
red green blue yellow orange purple cyan magenta white black square circle triangle appears disappears moves
left right up down visible object video frame second seconds start end event when where which what how many
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 . , : ; ( ) [ ] - the a is of in to and
You are a helpful assistant. system user assistant
"""


def _corpus() -> list[str]:
    lines = BASE_CORPUS.strip().splitlines()
    if PROMPTS_DIR.is_dir():
        for f in sorted(PROMPTS_DIR.glob("*.txt")):
            lines += f.read_text(encoding="utf-8").splitlines()
    # decimals are whole pre-tokens (NUMBER_AWARE_SPLIT): with these lines each time on a 0.25 s grid (tg, gqa) and
    # each box coordinate 0.00-1.00 (tracking) becomes one token, so an 8-box answer is ~80 tokens, not ~170
    lines += [f"{i / 4:.2f} to {(i + 3) / 4:.2f}" for i in range(0, 121)]
    lines += [f"[{i / 100:.2f}, {(100 - i) / 100:.2f}, {(i * 37 % 101) / 100:.2f}]" for i in range(101)]
    return [ln for ln in lines if ln.strip()] * 4


# GPT-2's split, except that a decimal like 12.54 (with its leading space) stays one piece
NUMBER_AWARE_SPLIT = r" ?\d+\.\d+| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def build_tokenizer(vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(NUMBER_AWARE_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
    )
    fast.chat_template = TEMPLATE_PATH.read_text()
    return fast


def _config_parts(tokenizer, p, **rope) -> tuple[dict, dict, dict]:
    """(special token ids, text config, the token-id fields of the top config), shared by both families."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = p.hidden_size // p.num_attention_heads
    text = dict(
        vocab_size=len(tokenizer), hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_hidden_layers, num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_key_value_heads, head_dim=head_dim, max_position_embeddings=32768,
        # mrope sections (temporal, height, width) must sum to head_dim / 2
        rope_parameters={"rope_type": "default", "mrope_section": _mrope(head_dim), **rope},
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None,
    )
    top = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    return ids, text, top


def build_config(tokenizer, p):
    from transformers import Qwen2_5_VLConfig

    _, text, top = _config_parts(tokenizer, p, rope_theta=p.rope_theta or 1e6)
    vision = dict(
        depth=p.vision_depth, hidden_size=p.vision_hidden_size, intermediate_size=2 * p.vision_hidden_size,
        num_heads=2, out_hidden_size=p.hidden_size, patch_size=14, temporal_patch_size=2,
        spatial_merge_size=2, window_size=112, fullatt_block_indexes=[p.vision_depth - 1], tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **top)


def build_qwen3_config(tokenizer, p):
    from transformers import Qwen3VLConfig

    _, text, top = _config_parts(tokenizer, p, rope_theta=p.rope_theta or 5e6, mrope_interleaved=True)  # Qwen3-VL: interleaved
    vision = dict(
        depth=p.vision_depth, hidden_size=p.vision_hidden_size, intermediate_size=2 * p.vision_hidden_size,
        num_heads=2, out_hidden_size=p.hidden_size, patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
        num_position_embeddings=256, deepstack_visual_indexes=[0],  # one deepstack layer: the path is exercised
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, **top)


def _mrope(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny_model(p, out_dir: str | Path) -> dict:
    """Build and save the tiny model of family `p.family`; returns a summary (parameter count, vocab, token ids)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    torch.manual_seed(p.seed)
    tokenizer = build_tokenizer(p.vocab_size)
    if p.family == "qwen3_vl":
        processor = build_qwen3_processor(tokenizer)
        config = build_qwen3_config(tokenizer, p)
        model = Qwen3VLForConditionalGeneration(config)
    else:
        processor = build_processor(tokenizer)
        config = build_config(tokenizer, p)
        model = Qwen2_5_VLForConditionalGeneration(config)
    # sampling defaults stay neutral: rollouts set their own (upstream defect 10: near-greedy defaults leak)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    summary = {
        "family": p.family,
        "parameters": sum(t.numel() for t in model.parameters()),
        "vocab_size": len(tokenizer),
        "video_token_id": config.video_token_id,
        "image_token_id": config.image_token_id,
    }
    (out / "tiny_model.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
