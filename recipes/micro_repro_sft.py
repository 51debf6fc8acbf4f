"""The supervised arm of the micro-reproduction: SFT on the gold answers of the same samples GRPO trains on.

VideoChat-R1 compares reinforcement fine-tuning with supervised fine-tuning on the same data. This arm starts from
the same model as the GRPO arm (the shipped base), takes the same nested subsets (n samples per task), and trains
the stage `sft` (gold targets in the prompt's layout, the video in the loss) once per seed; the same held-out
evaluation follows. Its learning rate and epochs are chosen per size on a VALIDATION split (seed 0 of each size,
every (lr, epoch) pair of the grid scored on it): training samples whose videos no GRPO subset uses, so neither
the subsets nor the held-out evaluation (eval.jsonl: other videos) ever inform the choice. The score is the mean
of the tasks' headline metrics (each task module's HEADLINE, stages/tasks) on that split.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from stages import tasks as task_registry
from stages.io import write_json, write_jsonl
from stages.params import Params


def validation_rows(train_rows: list[dict], largest: list[dict], per_task: int, seed: int) -> list[dict]:
    """Up to `per_task` training samples per task whose video no GRPO subset uses (seeded choice)."""
    used = {r["video_id"] for r in largest}
    by_task: dict[str, dict[str, dict]] = {}
    for r in train_rows:
        if r["video_id"] not in used:
            by_task.setdefault(r["task"], {})[r["id"]] = r
    out = []
    for task, unique in sorted(by_task.items()):
        ids = sorted(unique)
        random.Random(f"validation/{seed}/{task}").shuffle(ids)
        out += [unique[i] for i in ids[:per_task]]
    return out


def selection_score(metrics: dict) -> float:
    """Mean of the headline metrics of the tasks present: what the choice of lr and epochs maximises."""
    vals = [metrics[t][m] for t, m in task_registry.headline().items() if t in metrics and m in metrics[t]]
    if not vals:
        raise ValueError(f"no headline metric in {sorted(metrics)}")
    return sum(vals) / len(vals)


def best_trial(trials: list[dict]) -> dict:
    """Highest validation score; ties go to fewer epochs, then the smaller lr (the cheaper, gentler setting)."""
    return max(trials, key=lambda t: (round(t["score"], 9), -t["epochs"], -t["lr"]))


def choose(params: Params, start: str, n: int, rows: list[dict], val_rows: list[dict], lrs: list[float],
           epochs: list[int], seed: int) -> dict:
    """Train on `rows` (n per task) at each lr for max(epochs) epochs and score the validation split after each epoch in
    `epochs`; return the best (lr, epochs) with every trial."""
    import torch

    from stages import sft
    from stages.model.generate import generate
    from stages.model.load import load_model

    think, p = params.build_samples.think, params.sft
    trials = []
    c0 = time.process_time()
    for lr in lrs:
        torch.manual_seed(seed)
        model, processor = load_model(start)
        model.float()
        rng = random.Random(seed)
        examples = [sft.encode_example(processor, r, think) for r in sft.select_rows(rows, None, seed)]

        def score(epoch: int, losses: list[float], lr: float = lr) -> None:
            if epoch not in epochs:
                return
            model.eval()
            with torch.no_grad():
                texts = generate(model, processor, val_rows, params.evaluate.max_new_tokens, params.evaluate.batch_size)
            metrics = task_registry.score_outputs(val_rows, texts, think)[0]
            trials.append({"lr": lr, "epochs": epoch, "loss": round(sum(losses) / len(losses), 4),
                           "score": round(selection_score(metrics), 6),
                           "validation": {t: {m: metrics[t][m]} for t, m in task_registry.headline().items()
                                          if t in metrics}})
            print(f"micro-repro sft: choose n={n} lr {lr:g} epoch {epoch} loss {trials[-1]['loss']:.3f} "
                  f"validation score {trials[-1]['score']:.3f}", flush=True)

        sft.fit(model, processor, examples, lr, max(epochs), p.batch_size, rng, score)
    best = best_trial(trials)
    return {"lr": best["lr"], "epochs": best["epochs"], "score": best["score"], "trials": trials,
            "validation_samples": len(val_rows), "cpu_s": round(time.process_time() - c0, 1)}


def train_size(n: int, rows: list[dict], params: Params, start: str, lr: float, epochs: int, seed: int) -> dict:
    """One SFT run: the stage's own code on the size's subset, gold targets, every sample once per epoch."""
    from stages import sft

    samples = Path(params.build_samples.out_dir) / f"train-{n}.jsonl"
    write_jsonl(samples, rows)
    p = params.sft.model_copy(update={"enabled": True, "targets": "gold", "out_dir": f"models/sft-{n}-s{seed}",
                                      "max_samples_per_task": None, "learning_rate": lr, "epochs": epochs,
                                      "seed": seed, "tasks": sorted({r["task"] for r in rows})})
    model_p = params.model.model_copy(update={"name_or_path": start})
    t0, c0 = time.time(), time.process_time()
    summary = sft.run(p, model_p, str(samples), params.build_samples.think)
    write_json(Path(p.out_dir) / "sft.json", summary)
    return {"model": p.out_dir, "steps": summary["steps"], "train_wall_s": round(time.time() - t0, 1),
            "train_cpu_s": round(time.process_time() - c0, 1), "first_loss": summary["first_loss"],
            "last_loss": summary["last_loss"]}
