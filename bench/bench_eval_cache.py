"""The evaluate stage with the base model's generations computed (cold cache) vs read from the cache (warm), side
by side in one run, on the tiny offline model: what a new candidate saves by not re-running the base.

    python bench/bench_eval_cache.py [--per-task 8] [--max-new-tokens 48] [--repeat 3]

Candidate and base generate the same number of tokens, so where generation dominates (a real model) the warm run
tends to half of the cold one; with the tiny model, model loading and scoring weigh relatively more.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages import evaluate  # noqa: E402
from stages import tasks as task_registry  # noqa: E402
from stages.io import write_jsonl  # noqa: E402
from stages.params import EvaluateParams, MlflowParams, TinyModelParams  # noqa: E402
from stages.model.tiny import build_tiny_model  # noqa: E402

PROBLEMS = {
    "tg": ({"duration": 8.0, "sentence": "the red square moves right"}, {"timestamps": [1.0, 4.0]}),
    "gqa": ({"duration": 8.0, "question": "what moves", "options": ["(A) square", "(B) circle"]},
            {"answer": "A", "glue": [[1.0, 4.0]]}),
    "tracking": ({"object": "red square", "init_box": [0.1, 0.1, 0.3, 0.3]}, {"boxes": [[0.1, 0.1, 0.3, 0.3]] * 8}),
    "qa": ({"question": "how many objects", "options": ["(A) 1", "(B) 2"]}, {"answer": "A"}),
}


def samples(root: Path, per_task: int) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for task, (problem, solution) in PROBLEMS.items():
        for i in range(per_task):
            frames = root / f"{task}{i}.npy"
            np.save(frames, rng.integers(0, 255, (8, 84, 112, 3), dtype=np.uint8))
            rows.append({"id": f"{task}-{i}", "task": task, "frames": str(frames), "fps": 1.0,
                         "prompt": task_registry.render_prompt(task, problem), "solution": solution})
    write_jsonl(root / "eval.jsonl", rows)
    return root / "eval.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-eval-cache-"))
    model = root / "model"
    build_tiny_model(TinyModelParams(), model)
    path = samples(root, args.per_task)
    # wall time on a shared machine swings with other people's load; the process's CPU time (all threads) much less
    times = {"cold": {"wall": [], "cpu": []}, "warm": {"wall": [], "cpu": []}}
    for r in range(args.repeat):  # alternate, so drift in machine load hits both the same way
        p = EvaluateParams(max_new_tokens=args.max_new_tokens, batch_size=8, out_dir=str(root / "out"),
                           baseline_cache_dir=str(root / f"cache{r}"))
        for kind, expect_cached in (("cold", False), ("warm", True)):
            w0, c0 = time.perf_counter(), time.process_time()
            res = evaluate.run(p, str(model), str(model), str(path), MlflowParams())
            times[kind]["wall"].append(time.perf_counter() - w0)
            times[kind]["cpu"].append(time.process_time() - c0)
            assert res["baseline"]["cached"] is expect_cached
    print(f"evaluate, {4 * args.per_task} samples, {args.max_new_tokens} new tokens, median of {args.repeat}:")
    for clock in ("cpu", "wall"):
        c, w = (statistics.median(times[k][clock]) for k in ("cold", "warm"))
        print(f"  {clock:4} s: base computed (cold cache) {c:.2f} | base from cache (warm) {w:.2f} | warm/cold {w / c:.2f}")


if __name__ == "__main__":
    main()
