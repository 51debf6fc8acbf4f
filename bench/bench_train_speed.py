"""How fast is the demo's GRPO under each variant? Side by side, interleaved, on the demo's data.

Runs the train stage (params.yaml, the demo's samples in --work) for --steps steps in a fresh process per run,
once per variant per round (the order alternating), and prints each run's training seconds (the trainer's own
clock, start-up excluded), the minimum and median per variant, and their ratios to the first variant.
A variant is NAME=key=value[,key=value...] of params overrides; `threads=N` sets OMP_NUM_THREADS.

    python bench/bench_train_speed.py --work runs/ds17 --steps 40 --rounds 2 \
        --variant mixed= --variant same-task=train.task_batches=same_task
    python bench/bench_train_speed.py --variant two=threads=2 --variant one=threads=1

The work dir must hold the demo's samples (bench/demo_seeds.py makes them). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys, time
sys.path.insert(0, {root!r})
os.chdir({work!r})
from stages.params import load_params
from stages import train
p = load_params({params!r}, {sets!r})
tp = p.train.model_copy(update={{"out_dir": {out!r}, "checkpoint_dir": {ck!r}, "resume": False}})
s = train.run(tp, p.model, p.mlflow, "data/samples/train.jsonl", p.build_samples.think)
print("RESULT " + json.dumps({{"seconds": s.get("seconds")}}))
"""


def one(work: Path, steps: int, items: list[str], tmp: Path, tag: str) -> float:
    threads = next((i.split("=", 1)[1] for i in items if i.startswith("threads=")), "2")
    sets = [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"train.max_steps={steps}",
            f"model.name_or_path={ROOT / 'pretrained/tiny-qwen2_5_vl-v2'}"] + [i for i in items if not i.startswith("threads=")]
    code = CHILD.format(root=str(ROOT), work=str(work), params=str(ROOT / "params.yaml"), sets=sets,
                        out=str(tmp / f"model-{tag}"), ck=str(tmp / f"ck-{tag}"))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{tag} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(line[7:])["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/demo-seeds")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[], help="NAME=key=value[,key=value...]")
    args = ap.parse_args()
    # items split at a comma that starts another key (a comma inside a YAML list stays)
    variants = [(v.split("=", 1)[0], [i for i in re.split(r",(?=\s*(?:threads|[a-z_]+\.[a-z_]+)=)", v.split("=", 1)[1]) if i])
                for v in args.variant]
    if len(variants) < 2:
        raise SystemExit("give at least two --variant")
    work = (ROOT / args.work).resolve()
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for name, items in (variants if r % 2 == 0 else variants[::-1]):  # interleaved, order alternating
                times[name].append(one(work, args.steps, items, Path(d), f"{name}-{r}"))
                print(f"round {r} {name}: {times[name][-1]:.1f} s for {args.steps} steps", flush=True)
    first = variants[0][0]
    for name, v in times.items():
        print(f"{name}: min {min(v):.1f} s, median {statistics.median(v):.1f} s ({args.steps} steps); "
              f"/ {first}: min {min(v) / min(times[first]):.2f}, median "
              f"{statistics.median(v) / statistics.median(times[first]):.2f}")


if __name__ == "__main__":
    main()
