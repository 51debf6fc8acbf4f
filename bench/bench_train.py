"""CPU benchmark of a video GRPO step on the tiny model: seconds per step, its split (generation, scoring, loss,
optimizer) and peak RSS, and how they grow with the frames per video and with G — measured side by side in one
run, each configuration in its own process (peak RSS is per process), ratios against the smallest one.

    python bench/bench_train.py                 # frames 4, 8, 16 at G = 4; G = 2, 4, 8 at 8 frames
    python bench/bench_train.py --steps 5 --rounds 3 --json bench-train.json

Reported per phase in CPU seconds of the process (all threads; what the step costs, steadier than wall time on
a shared machine) with wall seconds per step beside them. The grid runs `rounds` times, interleaved; each
configuration keeps its cheapest round (interference only ever adds time). Every step: 2 prompts x G completions of exactly 32 tokens (min_new_tokens), 112x84 frames, beta 0.04, one CPU
thread (OMP_NUM_THREADS=1). Results go to docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GRID = [{"frames": f, "G": 4} for f in (4, 8, 16)] + [{"frames": 8, "G": g} for g in (2, 8)]


def one(frames: int, g: int, steps: int, warmup: int, tokens: int) -> dict:
    """One configuration in this process: median phase seconds per step and peak RSS."""
    import torch

    torch.set_num_threads(1)
    from bench_train_common import PhaseClock, StepTimer, length_reward, split, timed_trainer, write_clips
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.params import TinyModelParams, TrainParams
    from stages.model.tiny import build_tiny_model
    from stages.train import build_dataset, grpo_config

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    build_tiny_model(TinyModelParams(), work / "model")
    prompts = 2
    rows = write_clips(work / "frames", (warmup + steps) * prompts, frames, 84, 112)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(work / "model")
    p = TrainParams(tasks=["tg"], num_generations=g, per_device_train_batch_size=g * prompts,
                    max_steps=warmup + steps, max_completion_length=tokens, learning_rate=1e-5, bf16=False,
                    save_steps=10 ** 9, logging_steps=1)
    clock = PhaseClock()
    trainer = timed_trainer(clock, model.config)(
        model=model, processing_class=AutoProcessor.from_pretrained(work / "model"), reward_funcs=[length_reward],
        args=grpo_config(p, str(work / "out"), use_cpu=True), train_dataset=build_dataset(rows, ["tg"]),
        callbacks=[StepTimer(clock)],
    )
    trainer.generation_config.min_new_tokens = tokens
    trainer.train()
    out = {"frames": frames, "G": g, "completions": g * prompts}
    for prefix in ("", "cpu_"):
        splits = [split(r, prefix) for r in clock.steps[warmup:]]
        out.update({f"{prefix}{k}": round(statistics.median(s[k] for s in splits), 4) for k in splits[0]})
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def table(rows: list[dict]) -> str:
    """Markdown table; ratios against the first row. CPU seconds (all threads of the process) per phase, the
    steadier measure on a shared machine; wall seconds per step beside them."""
    base = rows[0]
    lines = ["| frames | G | completions/step | CPU s/step | x | generate | score | loss | optimizer | wall s/step "
             "| x | peak RSS MiB | x |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['G']} | {r['completions']} | {r['cpu_step']:.3f} | "
            f"{r['cpu_step'] / base['cpu_step']:.2f} | {r['cpu_generate']:.3f} | {r['cpu_score']:.3f} | "
            f"{r['cpu_loss']:.3f} | {r['cpu_optimizer']:.3f} | {r['step']:.3f} | {r['step'] / base['step']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / base['peak_rss_mib']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print its JSON
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print("RESULT " + json.dumps(one(spec["frames"], spec["G"], args.steps, args.warmup, args.tokens)))
        return []
    # one thread: idle OpenMP threads spin on a busy machine and bill CPU time that is not work
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    best: dict[int, dict] = {}
    for _ in range(args.rounds):
        for i, spec in enumerate(GRID):
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec), "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--tokens", str(args.tokens)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"{spec} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            print(json.dumps(r), flush=True)
            if i not in best or r["cpu_step"] < best[i]["cpu_step"]:
                best[i] = r
    results = [best[i] for i in range(len(GRID))]
    print(f"\n{os.cpu_count()} CPUs, one torch thread per configuration; medians of {args.steps} steps after "
          f"{args.warmup} warm-up, cheapest (CPU s) of {args.rounds} rounds\n\nGrowth with frames (G = 4; ratios against 4 frames):\n")
    print(table(sorted((r for r in results if r["G"] == 4), key=lambda r: r["frames"])))
    print("\nGrowth with G (8 frames; ratios against G = 2):\n")
    print(table(sorted((r for r in results if r["frames"] == 8), key=lambda r: r["G"])))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
