"""Did the training reward rise? Paired, on the same prompts: the base and each trained model sample G completions
of the same N training prompts per task, as GRPO samples them (params.yaml's train temperature / top_p / top_k and
completion budget), and each completion gets the training reward (the sum of the task's reward parts). Per prompt,
the mean reward of the model minus the base's; the table gives the mean difference with a paired bootstrap interval
over prompts, and each model's mean reward parts (format / IoU ...).

Why: the training curves (MLflow, `dvc plots`) average different prompts in every logging window, so prompt
difficulty swamps a gain of a few hundredths (tg's windows differ by +-0.15); the same prompts, paired, resolve it.

    python bench/reward_probe.py --work runs/ds17 --model demo=models/run --model s1=runs/ds17/models/same-task-s1
    python bench/reward_probe.py --tasks tg,tracking --prompts 32

The same measurement as evaluate's `evaluate.reward_probe` (stages/reward_probe.py), for any number of models and
prompts. The work dir must hold the demo's samples and frames (data/samples/train.jsonl, data/frames: bench/demo_seeds.py
makes them, or the repository itself after `dvc repro`). Run it alone; about 10-20 s per model and task for 64 tg
prompts on 2 cores (tracking's 80-token answers take longer).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.io import read_jsonl, write_json  # noqa: E402
from stages.params import load_params  # noqa: E402
from stages.reward_probe import Sampling, means, paired, probe_rows, sample_rewards  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=".", help="holds data/samples/train.jsonl and data/frames")
    ap.add_argument("--base", default=None, help="default: params.yaml's model.name_or_path")
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH of a trained model (repeatable)")
    ap.add_argument("--tasks", default="tg")
    ap.add_argument("--prompts", type=int, default=64, help="training prompts per task")
    ap.add_argument("--generations", type=int, default=None, help="completions per prompt (default train's G)")
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results (default: <work>/reward_probe.json)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stages.model.load import load_model

    params = load_params(ROOT / "params.yaml")
    tp = params.train
    s = Sampling(args.generations or tp.num_generations, tp.temperature, tp.top_p, tp.top_k,
                 tp.max_completion_length, params.build_samples.think)
    base = str(Path(args.base).resolve()) if args.base else str(ROOT / params.model.name_or_path)
    models = {name: str(Path(path).resolve()) for name, path in (m.split("=", 1) for m in args.model)}
    work = Path(args.work).resolve()
    out = Path(args.out).resolve() if args.out else work / "reward_probe.json"
    os.chdir(work)  # sample rows name their frames relative to the work dir
    rows = read_jsonl(Path("data/samples/train.jsonl"))
    result = {"base": base, "sampling": s.__dict__, "level": args.level, "tasks": {}}
    for task in args.tasks.split(","):
        chosen = probe_rows(rows, task, args.prompts, args.seed)
        t0 = time.time()
        ref = sample_rewards(*load_model(base, "cpu"), chosen, s, args.seed)
        entry = {"base": means(ref), "base_seconds": round(time.time() - t0, 1), "models": {}}
        base_parts = " ".join(f"{k} {v:.3f}" for k, v in entry["base"].items() if k != "reward")
        print(f"{task}: base reward {entry['base']['reward']:.3f} on {len(chosen)} prompts x {s.generations} "
              f"({entry['base_seconds']} s)", flush=True)
        for name, path in models.items():
            t0 = time.time()
            got = sample_rewards(*load_model(path, "cpu"), chosen, s, args.seed)
            d = paired(got, ref, args.level, args.resamples, args.seed)
            entry["models"][name] = {"path": path, **means(got), **d, "seconds": round(time.time() - t0, 1)}
            parts = " ".join(f"{k} {v:.3f}" for k, v in means(got).items() if k != "reward")
            print(f"{task} {name}: reward {means(got)['reward']:.3f}, minus base {d['delta']:+.3f} "
                  f"[{d['lo']:+.3f}, {d['hi']:+.3f}] | {parts} (base {base_parts})", flush=True)
        result["tasks"][task] = entry
    write_json(out, result)
    return result


if __name__ == "__main__":
    main()
