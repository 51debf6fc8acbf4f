"""GPU benchmark of one video GRPO step at the paper's scale: a Qwen2.5-VL-7B-sized model with random weights
(architecture from bench/configs/qwen2_5_vl_7b.json, no download), 16 frames per video, G = 8 completions of the
paper's 1024 tokens, 1 prompt per GPU, bf16, gradient checkpointing, beta = 0.04 (a reference model on the GPU).

Prints, per measured step and as the median: the time split between generation, scoring (reference log-probs
with the video, rewards) and the loss phase (policy forward + backward with the video), generation and
loss-phase tokens per second, peak GPU memory, and the model FLOPs utilisation (MFU) of the loss phase:
3 x forward model FLOPs (bench_train_common.loss_phase_flops; recompute not counted) / time / peak bf16 FLOPS.

    python bench/bench_train_gpu.py                       # H100/H200: the paper-scale step
    python bench/bench_train_gpu.py --tiny --steps 1      # CPU: the same code path on the tiny model (tests)

The optimizer defaults to SGD (no state): a 7B policy + reference + gradients + AdamW state do not fit one
80 GB GPU (the real run shards them with ZeRO-3); the optimizer step is outside the phases measured anyway.
The random model rarely emits end-of-turn, and min_new_tokens pins every completion to full length.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_common import PhaseClock, StepTimer, length_reward, split, timed_trainer, write_clips  # noqa: E402

# dense bf16 peak (no sparsity), TFLOPS, by device-name substring; first match wins
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0),
                    ("L40S", 362.0), ("A10G", 70.0)]


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for key, v in PEAK_BF16_TFLOPS if key in name), None)


def build(args, device: str, dtype):
    """(model, processor) with random weights: the tiny model's tokenizer/processor, the 7B architecture."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from stages.model.processor import build_processor
    from stages.model.tiny import SPECIAL_TOKENS, build_config, build_tokenizer
    from stages.params import TinyModelParams

    tokenizer = build_tokenizer(512)
    processor = build_processor(tokenizer, max_pixels=16384 * 28 * 28)  # frames arrive budgeted
    if args.tiny:
        config = build_config(tokenizer, TinyModelParams())
    else:
        config = Qwen2_5_VLConfig.from_dict(json.loads(Path(args.config).read_text()))
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        # the real vocabulary size stays (embedding and lm_head cost); special ids follow this tokenizer
        config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
        config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
        config.text_config.eos_token_id, config.text_config.pad_token_id = ids["<|im_end|>"], ids["<|endoftext|>"]
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype,
                                                                attn_implementation=args.attn_implementation)
    model.generation_config = GenerationConfig(eos_token_id=config.text_config.eos_token_id,
                                               pad_token_id=config.text_config.pad_token_id)
    return model, processor


def run(args) -> dict:
    from stages.params import TrainParams
    from stages.train import build_dataset, grpo_config

    cuda = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    model, processor = build(args, device, dtype)
    work = Path(tempfile.mkdtemp(prefix="bench-train-gpu-"))
    total_steps = args.warmup + args.steps
    rows = write_clips(work / "frames", total_steps * args.prompts, args.frames, args.height, args.width)
    g = args.num_generations
    p = TrainParams(tasks=["tg"], num_generations=g, per_device_train_batch_size=g * args.prompts,
                    max_steps=total_steps, max_completion_length=args.max_completion_length, learning_rate=1e-6,
                    optim=args.optim, beta=0.0, bf16=cuda, gradient_checkpointing=True, save_steps=10 ** 9,
                    logging_steps=1)
    clock = PhaseClock()
    trainer = timed_trainer(clock, model.config)(
        model=model, processing_class=processor, reward_funcs=[length_reward],
        args=grpo_config(p, str(work / "out"), use_cpu=not cuda), train_dataset=build_dataset(rows, ["tg"]),
        callbacks=[StepTimer(clock)],
    )
    if args.beta:  # a reference copy in place of TRL's from_pretrained(path): random weights have no path
        trainer.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        trainer.beta = args.beta
    trainer.generation_config.min_new_tokens = args.max_completion_length  # full-length completions
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    measured = clock.steps[args.warmup:]
    splits = [split(r) for r in measured]
    med = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
    gen_tokens = statistics.median(r.get("n_generated_tokens", 0) for r in measured)
    loss_tokens = statistics.median(r.get("n_loss_tokens", 0) for r in measured)
    flops = statistics.median(r.get("n_loss_flops", 0) for r in measured)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(name, args.peak_tflops) if cuda else None
    return {
        "device": name,
        "parameters": sum(q.numel() for q in model.parameters()),
        "frames": args.frames, "frame_size": [args.height, args.width], "G": g, "prompts_per_step": args.prompts,
        "completion_tokens": args.max_completion_length, "beta": args.beta, "optim": args.optim,
        "steps_measured": len(measured),
        "seconds": {k: round(v, 6) for k, v in med.items()},
        "share": {k: round(med[k] / med["step"], 4) for k in ("generate", "score", "loss", "optimizer")},
        "generate_tokens_per_s": round(gen_tokens / med["generate"], 2) if med["generate"] else None,
        "loss_tokens_per_s": round(loss_tokens / med["loss"], 2) if med["loss"] else None,
        "loss_tokens": loss_tokens,
        "loss_flops": flops,
        "loss_tflops_per_s": round(flops / med["loss"] / 1e12, 4) if med["loss"] else None,
        "mfu_loss": round(flops / med["loss"] / (peak * 1e12), 4) if (peak and med["loss"]) else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None,
    }


def parse(argv=None):
    ap = argparse.ArgumentParser(description="GRPO step at Qwen2.5-VL-7B scale: phases, tokens/s, memory, MFU")
    ap.add_argument("--config", default=str(Path(__file__).with_name("configs") / "qwen2_5_vl_7b.json"))
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU, small clips (exercises the code path)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=392, help="frame height (16 frames x 392x448 is within the "
                    "paper's total_pixels = 3584*28*28)")
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=1, help="prompts per step on this GPU (paper: 1)")
    ap.add_argument("--max-completion-length", type=int, default=1024)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--optim", default="sgd", help="transformers optimizer name (sgd: no optimizer state)")
    ap.add_argument("--attn-implementation", default="sdpa")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width = min(args.frames, 4), 56, 56
        args.max_completion_length, args.num_generations = min(args.max_completion_length, 8), 2
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    result = run(args)
    print(f"{'phase':<12}{'seconds':>10}{'share':>8}")
    for k in ("generate", "score", "loss", "optimizer"):
        print(f"{k:<12}{result['seconds'][k]:>10.3f}{result['share'][k]:>8.1%}")
    print(f"{'step':<12}{result['seconds']['step']:>10.3f}")
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
