"""Benchmark: reward and metric cost per completion, worst case on adversarial inputs, and the share of a
training step spent on rewards (target: never more than 1 %).

Run: python bench/bench_rewards.py [--quick] [--json OUT]

1. Throughput: completions scored per second per task, through the training path (every TRL reward function of
   the four tasks over a batch, as GRPOTrainer calls them) and through the evaluation path (parse + metrics),
   for realistic completions of ~200, ~500 and ~1000 tokens (a reasoning paragraph with numbers, times, boxes
   and letters in it, then the answer; ~4 characters per token).
2. Worst case: 1 MB adversarial completions (nested and unclosed tags, long digit runs, many "to" pairs, ...),
   each scored by every task, as a ratio to a realistic 1000-token completion measured in the same run.
3. Share of a step: a real GRPO step of the tiny model on this CPU (VideoGRPOTrainer, G=4, 8 completions of up
   to 32 tokens, 8 frames), with the time inside the reward functions measured in the same steps; and the
   reward time of a 7B-recipe step (8 completions of ~1000 tokens per GPU) against a lower bound of its step.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages import tasks as T  # noqa: E402

CHARS_PER_TOKEN = 4
MB = 1 << 20
BOXES = [[round(0.1 + 0.01 * i, 3), 0.2, round(0.5 + 0.01 * i, 3), 0.6] for i in range(8)]
SOLUTIONS = {
    "tg": json.dumps({"timestamps": [12.5, 17.8]}),  # training passes solutions as JSON strings
    "gqa": json.dumps({"answer": "C", "glue": [[13.8, 29.8], [34.4, 35.8]]}),
    "tracking": json.dumps({"boxes": BOXES}),
    "qa": json.dumps({"answer": "B"}),
}
TASK_NAMES = tuple(SOLUTIONS)  # the tasks this benchmark has realistic answers for
WORDS = ("the person walks to the door and then opens it while the camera pans left so the object moves "
         "from frame to frame before it disappears near the table where a cup is visible and option").split()


def reasoning(rng: random.Random, chars: int) -> str:
    """A think paragraph of about `chars` characters with the things answers contain: times, ranges, boxes,
    option letters, brackets."""
    bits = []
    while sum(map(len, bits)) < chars:
        r = rng.random()
        if r < 0.06:
            bits.append(f"{rng.uniform(0, 60):.2f} to {rng.uniform(0, 60):.2f} seconds")
        elif r < 0.09:
            bits.append(f"[{rng.random():.3f}, {rng.random():.3f}, {rng.random():.3f}, {rng.random():.3f}]")
        elif r < 0.11:
            bits.append(f"({rng.choice('ABCDE')})")
        else:
            bits.append(rng.choice(WORDS))
    return " ".join(bits)[:chars]


def answer(task: str, rng: random.Random) -> str:
    """A plausible answer, right, partly right or wrong."""
    if task == "tg":
        s = rng.uniform(5, 20)
        return f"<answer>{s:.2f} to {s + rng.uniform(1, 10):.2f}</answer>"
    if task == "gqa":
        s = rng.uniform(10, 30)
        glue = f"[({s:.1f}, {s + 6:.1f}), ({s + 9:.1f}, {s + 12:.1f})]"
        return f"<answer>{rng.choice('ABCDE')}</answer>\n<glue>{glue}</glue>"
    if task == "tracking":
        jitter = [[round(min(1.0, max(0.0, v + rng.uniform(-0.05, 0.05))), 3) for v in b] for b in BOXES]
        return f"<answer>{json.dumps(jitter)}</answer>"
    return f"<answer>{rng.choice('ABCDE')}</answer>"


def completions(task: str, tokens: int, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"<think>{reasoning(rng, tokens * CHARS_PER_TOKEN)}</think>\n{answer(task, rng)}" for _ in range(n)]


def best_time(fn, repeat: int) -> float:
    """Fastest of `repeat` calls (seconds): the cost without scheduling noise of a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


FUNCS = T.reward_functions(list(TASK_NAMES))


def training_path(task: str, texts: list[str]):
    """Every reward function of every task over the batch, as GRPOTrainer._calculate_rewards calls them."""
    batch = {"prompts": [None] * len(texts), "completions": [[{"role": "assistant", "content": t}] for t in texts],
             "task": [task] * len(texts), "solution": [SOLUTIONS[task]] * len(texts)}
    return lambda: [f(**batch) for f in FUNCS]


def evaluation_path(task: str, texts: list[str]):
    return lambda: [(T.parse(task, t), T.sample_metrics(task, t, SOLUTIONS[task])) for t in texts]


def throughput(quick: bool) -> dict:
    n, repeat = (32, 3) if quick else (128, 5)
    out = {}
    for task in TASK_NAMES:
        for tokens in (200, 500, 1000):
            texts = completions(task, tokens, n)
            train = best_time(training_path(task, texts), repeat) / n
            evaluate = best_time(evaluation_path(task, texts), repeat) / n
            out[f"{task}/{tokens}"] = {"train_per_s": 1 / train, "eval_per_s": 1 / evaluate,
                                       "train_us": train * 1e6, "eval_us": evaluate * 1e6}
    return out


def adversarial() -> dict[str, str]:
    return {
        "nested tags": "<think><answer><glue>" * (MB // 42) + "</glue></answer></think>" * (MB // 48),
        "unclosed tags": "<think>" + "<answer>0 to 10 " * (MB // 16),
        "opening tags only": "<answer>" * (MB // 8),
        "digits, one block": "<answer>" + "9" * MB + "</answer>",
        "digit runs of 1000": "<think>" + ("1" * 1000 + " to ") * (MB // 1004) + "</think><answer>1 to 2</answer>",
        "many 'to' pairs": "<think>x</think><answer>" + "1.5 to 2.5 and " * (MB // 15) + "</answer>",
        "'to' pairs, 4 KB block": "x" * MB + "<think>x</think><answer>" + "1.5 to 2.5 and " * 270 + "</answer>",
        "almost pairs": "<answer>" + "1 to -" * (MB // 6) + "</answer>",
        "almost box list": "<think>x</think><answer>[" + "[0.1, 0.2, 0.3, 0.4], " * (MB // 22) + "[0.1]]</answer>",
        "almost box list, 4 KB": "x" * MB + "<think>x</think><answer>[" + "[0.1, 0.2, 0.3, 0.4], " * 180
                                 + "[0.1]]</answer>",
        "almost glue, 4 KB": "x" * MB + "<think>x</think><answer>C</answer><glue>["
                             + "(1.5, 2.5), " * 330 + "(1, 2]</glue>",
        "brackets": "<answer>" + "[(" * (MB // 2) + "</answer>",
        "whitespace": "<think>" + " \n\t" * (MB // 3) + "</think><answer>" + " " * MB + "</answer>",
        "letters": "<think>x</think><answer>" + "Because " * (MB // 8) + "</answer>",
    }


def worst_case(quick: bool) -> dict:
    repeat = 2 if quick else 5
    realistic = {t: completions(t, 1000, 1)[0] for t in TASK_NAMES}

    def all_tasks(text_of):
        def run():
            for task in TASK_NAMES:
                text = text_of(task)
                training_path(task, [text])()
                evaluation_path(task, [text])()
        return run

    base = best_time(all_tasks(lambda t: realistic[t]), repeat * 4)
    rows = {}
    for name, text in adversarial().items():
        cost = best_time(all_tasks(lambda t, text=text: text), repeat)
        rows[name] = {"chars": len(text), "ms": cost * 1e3, "x_realistic": cost / base}
    return {"realistic_1000_tokens_ms": base * 1e3, "inputs": rows}


def tiny_grpo_step(steps: int) -> dict:
    """Seconds per GRPO step of the tiny model on this CPU and the seconds spent in the reward functions."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

    from stages.params import TinyModelParams, TrainParams
    from stages.model.tiny import build_tiny_model
    from stages.rl.video_grpo import VideoGRPOTrainer
    from stages.train import build_dataset, grpo_config

    reward_seconds: list[float] = []

    def timed_reward(fn):
        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            reward_seconds[-1] += time.perf_counter() - t0
            return out
        wrapped.__name__ = fn.__name__
        return wrapped

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            reward_seconds.append(0.0)

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(TinyModelParams(), tmp)
        rng = np.random.default_rng(0)
        rows = []
        for i, task in enumerate(TASK_NAMES * 4):
            frames = f"{tmp}/v{i}.npy"
            np.save(frames, rng.integers(0, 255, (8, 112, 112, 3), dtype=np.uint8))
            rows.append({"id": f"s{i}", "task": task, "prompt": f"Sample {i}: answer in <answer> tags.",
                         "frames": frames, "fps": 2.0, "solution": json.loads(SOLUTIONS[task])})
        p = TrainParams(num_generations=4, per_device_train_batch_size=8, max_completion_length=32,
                        max_steps=steps, logging_steps=1, learning_rate=1e-6)
        args = grpo_config(p, f"{tmp}/run", use_cpu=True)
        args.save_strategy = "no"
        clock = StepClock()
        torch.manual_seed(0)
        trainer = VideoGRPOTrainer(
            model=AutoModelForImageTextToText.from_pretrained(tmp), processing_class=AutoProcessor.from_pretrained(tmp),
            reward_funcs=[timed_reward(f) for f in T.reward_functions(list(TASK_NAMES))], args=args,
            train_dataset=build_dataset(rows, list(TASK_NAMES)), callbacks=[clock],
        )
        trainer.train()
    step, rewards = clock.seconds[1:], reward_seconds[1:]  # the first step warms caches up
    return {"steps": len(step), "step_s": sum(step) / len(step), "reward_s": sum(rewards) / len(rewards),
            "completions_per_step": 8}


# A 7B step (Qwen2.5-VL-7B, 8 completions of up to 1024 tokens per GPU, video prompt, ref + policy forward,
# backward, ZeRO-3 offload): the paper's ~30 h on 8 A100 for one epoch over a few thousand to ~18k prompts at
# 8 prompts a step is ~45-175 s a step. Lower bound used for the ratio: 1024 sequential decoding steps of a 7B
# model at >= 10 ms each = 10 s for the generation alone. Not measured here (no GPU, no 7B weights offline).
STEP_7B_LOWER_BOUND_S = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--steps", type=int, default=6, help="tiny GRPO steps to time (the first is discarded)")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start (a shared machine inflates every "
          "figure; the ratios are measured side by side)\n")
    res = {"cores": os.cpu_count(), "load_average": load, "throughput": throughput(args.quick)}
    print("1. completions scored per second (best of repeats; train = all 9 TRL reward functions, eval = parse +"
          " metrics)")
    print(f"   {'task/tokens':<16}{'train /s':>12}{'eval /s':>12}{'train us':>11}{'eval us':>10}")
    for key, r in res["throughput"].items():
        print(f"   {key:<16}{r['train_per_s']:>12,.0f}{r['eval_per_s']:>12,.0f}{r['train_us']:>11.1f}"
              f"{r['eval_us']:>10.1f}")

    res["worst_case"] = wc = worst_case(args.quick)
    print(f"\n2. adversarial 1 MB completions, all four tasks, train + eval path "
          f"(realistic 1000-token completion: {wc['realistic_1000_tokens_ms']:.3f} ms)")
    for name, r in wc["inputs"].items():
        print(f"   {name:<26}{r['chars']:>9,} chars {r['ms']:>8.2f} ms {r['x_realistic']:>8.1f}x realistic")
    worst = max(wc["inputs"].items(), key=lambda kv: kv[1]["ms"])
    print(f"   worst: {worst[0]} {worst[1]['ms']:.2f} ms")

    res["tiny_step"] = st = tiny_grpo_step(args.steps)
    share = st["reward_s"] / st["step_s"]
    per_completion_1000 = max(r["train_us"] for k, r in res["throughput"].items() if k.endswith("/1000")) * 1e-6
    reward_7b = 8 * per_completion_1000
    res["share"] = {"tiny_cpu": share, "reward_7b_step_s": reward_7b,
                    "recipe_7b_vs_lower_bound": reward_7b / STEP_7B_LOWER_BOUND_S,
                    "recipe_rewards_vs_tiny_cpu_step": reward_7b / st["step_s"]}
    print(f"\n3. share of a training step spent in the reward functions (target <= 1 %)")
    print(f"   tiny Qwen2.5-VL GRPO step on this CPU: {st['step_s'] * 1e3:.0f} ms, rewards inside it "
          f"{st['reward_s'] * 1e3:.2f} ms for {st['completions_per_step']} completions -> {100 * share:.3f} %")
    print(f"   7B recipe: 8 completions of ~1000 tokens per GPU -> {reward_7b * 1e3:.2f} ms of rewards; "
          f"vs a {STEP_7B_LOWER_BOUND_S:.0f} s lower bound of a 7B step -> "
          f"{100 * reward_7b / STEP_7B_LOWER_BOUND_S:.4f} %"
          f" (even vs the tiny CPU step: {100 * reward_7b / st['step_s']:.2f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
