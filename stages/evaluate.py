"""Stage evaluate: greedy decoding of the candidate (trained) and the baseline (base) model on the held-out
samples of every task; per-task metrics for both and the difference; per-sample predictions.

Writes metrics/eval.json, metrics/predictions.jsonl, and logs eval/<model>/<task>/<metric> to the training run.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from stages import tasks as task_registry
from stages.io import read_json, read_jsonl, write_json, write_jsonl
from stages.params import EvaluateParams, MlflowParams, load_params


def select(rows: list[dict], cap: int | None) -> list[dict]:
    by_task = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    return [r for t in sorted(by_task) for r in (by_task[t][:cap] if cap else by_task[t])]


def score_outputs(rows: list[dict], outputs: list[str], think: bool = True) -> tuple[dict, list[dict]]:
    """Per-task aggregated metrics and per-sample records (parsed answer, reward parts, metric inputs)."""
    per_task, records = defaultdict(list), []
    for r, text in zip(rows, outputs, strict=True):
        task = r["task"]
        sample = task_registry.sample_metrics(task, text, r["solution"])
        per_task[task].append(sample)
        records.append({
            "id": r["id"], "task": task, "output": text,
            "parsed": task_registry.parse(task, text),
            "rewards": task_registry.score(task, text, r["solution"], think=think),
            "metrics": sample,
        })
    return {t: task_registry.aggregate(t, v) for t, v in sorted(per_task.items())}, records


def evaluate_model(name_or_path: str, rows: list[dict], p: EvaluateParams, think: bool) -> tuple[dict, list[dict]]:
    from stages.rl.generate import generate, load_policy

    model, processor = load_policy(name_or_path)
    outputs = generate(model, processor, rows, p.max_new_tokens, p.batch_size)
    return score_outputs(rows, outputs, think)


def delta(candidate: dict, baseline: dict) -> dict:
    return {
        t: {k: round(v - baseline[t][k], 6) for k, v in m.items() if k != "count" and k in baseline.get(t, {})}
        for t, m in candidate.items() if t in baseline
    }


def run(p: EvaluateParams, candidate: str, baseline: str, samples_path: str, mlflow_p: MlflowParams,
        train_summary: str | None = None, think: bool = True) -> dict:
    rows = select(read_jsonl(samples_path), p.max_samples_per_task)
    if not rows:
        raise ValueError(f"{samples_path}: no evaluation samples")
    cand_metrics, cand_records = evaluate_model(candidate, rows, p, think)
    base_metrics, base_records = evaluate_model(baseline, rows, p, think)
    result = {
        "candidate": {"model": candidate, "metrics": cand_metrics},
        "baseline": {"model": baseline, "metrics": base_metrics},
        "delta": delta(cand_metrics, base_metrics),
        "samples": len(rows),
    }
    out = Path(p.out_dir)
    write_json(out / "eval.json", result)
    write_jsonl(out / "predictions.jsonl",
                [{"model": "candidate", **r} for r in cand_records] + [{"model": "baseline", **r} for r in base_records])
    if train_summary and Path(train_summary).exists():
        import mlflow

        from stages.tracking import finite_metrics, setup

        setup(mlflow_p)
        run_id = read_json(train_summary)["mlflow_run_id"]
        flat = {f"eval/{who}/{t}/{k}": v for who, m in (("candidate", cand_metrics), ("baseline", base_metrics))
                for t, mt in m.items() for k, v in mt.items()}
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(finite_metrics(flat))
            mlflow.log_artifact(str(out / "eval.json"), artifact_path="eval")
    return result


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = load_params()
    res = run(params.evaluate, params.train.out_dir, params.model.name_or_path,
              os.path.join(params.build_samples.out_dir, "eval.jsonl"), params.mlflow,
              os.path.join(params.train.out_dir, "train_summary.json"), params.build_samples.think)
    for t, m in res["candidate"]["metrics"].items():
        print(f"evaluate: {t}: candidate {m} | baseline {res['baseline']['metrics'][t]}")


if __name__ == "__main__":
    main()
