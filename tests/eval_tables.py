"""Evaluation tables for gate and registry tests, built from per-sample headline values: the eval_samples.json
evaluate writes (per task, per sample id, the metric rows of candidate and base) and the eval.json metrics that
aggregate them."""
from __future__ import annotations

import random

from stages.tasks import aggregate


def row(task: str, v: float) -> dict:
    """A per-sample metric row (stages.tasks.sample_metrics' shape) whose headline metric is v (qa: correct or not)."""
    if task == "tg":
        return {"iou": v, "parsed": True}
    if task == "gqa":
        return {"correct": float(v >= 0.5), "evidence_iou": v, "iop": v, "parsed": True}
    if task == "tracking":
        return {"miou": v, "ious": [v] * 8, "parsed": True}
    return {"correct": float(v >= 0.5), "parsed": True}


def samples(candidate: dict[str, list[float]], baseline: dict[str, list[float]], inputs: str = "inputs-sha") -> dict:
    """eval_samples.json of candidate and base answering the same samples (ids <task>-<i>)."""
    return {"inputs_sha256": inputs, "tasks": {
        t: {f"{t}-{i}": {"candidate": row(t, c), "baseline": row(t, b)}
            for i, (c, b) in enumerate(zip(candidate[t], baseline[t], strict=True))}
        for t in sorted(candidate)}}


def metrics(table: dict, who: str) -> dict:
    """What eval.json reports for one model ('candidate' or 'baseline') of a samples table."""
    return {t: aggregate(t, [r[who] for r in by_id.values()]) for t, by_id in table["tasks"].items()}


def base_values(n: int = 48, seed: int = 0) -> dict[str, list[float]]:
    """A plausible base model: IoUs spread over [0, 0.8], about 60 % of QA right."""
    rng = random.Random(seed)
    return {"tg": [rng.uniform(0, 0.8) for _ in range(n)], "gqa": [rng.uniform(0, 0.8) for _ in range(n)],
            "tracking": [rng.uniform(0, 0.8) for _ in range(n)], "qa": [float(rng.random() < 0.6) for _ in range(n)]}


def noisy(values: dict[str, list[float]], seed: int, scale: float = 0.1, flips: int = 4) -> dict[str, list[float]]:
    """The same model but for noise: symmetric noise on every IoU (clipped to [0, 1]); QA answers flipped both
    ways, `flips` right ones made wrong and `flips` wrong ones made right."""
    rng = random.Random(seed)
    out = {t: [min(1.0, max(0.0, v + rng.uniform(-scale, scale))) for v in vs] for t, vs in values.items() if t != "qa"}
    qa = list(values["qa"])
    right, wrong = [i for i, v in enumerate(qa) if v], [i for i, v in enumerate(qa) if not v]
    for i in rng.sample(right, flips) + rng.sample(wrong, flips):
        qa[i] = 1.0 - qa[i]
    return {**out, "qa": qa}


def shifted(values: dict[str, list[float]], **by: float) -> dict[str, list[float]]:
    """Every sample of the named tasks moved by the same amount (clipped to [0, 1])."""
    return {t: [min(1.0, max(0.0, v + by.get(t, 0.0))) for v in vs] for t, vs in values.items()}
