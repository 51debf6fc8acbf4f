"""Reference lines a model can reach without looking at the video.

`blind_reference`: the best blind answer fit on the training set (one interval as fractions of the duration, the
most frequent letter, the static tracker). A gain up to this line can come from learning the benchmark's priors
alone; above it, the model uses the video. `reference_metrics`: random well-formed answers drawn from each task's
prior. Evaluate reports the first beside candidate and base; the micro-reproduction (recipes/micro_repro.py)
draws both on its curve.
"""
from __future__ import annotations

import random
from collections import Counter


def reference_metrics(rows: list[dict], think: bool, seed: int) -> dict:
    """What answering from each task's prior, without looking at the video, scores (stages/sft.py's `format`
    targets): a random interval and letter, a tracker that never moves. The floor GRPO has to beat."""
    from stages.evaluate import score_outputs
    from stages.sft import prior_solution, target_text

    rng = random.Random(seed)
    texts = [target_text(r["task"], prior_solution(r["task"], r, rng), think) for r in rows]
    return score_outputs(rows, texts, think)[0]


def blind_reference(train_rows: list[dict], eval_rows: list[dict], think: bool, protocol: str = "ours") -> dict:
    """The best a model can score WITHOUT looking at the video, fit on the training set: one interval as fractions
    of the duration (tg, gqa evidence), the most frequent letter (gqa, qa), the static tracker. A GRPO gain up to
    this line can come from learning the benchmark's priors alone; above it, the model uses the video. Scored under
    the evaluation's scoring `protocol`."""
    from stages import tasks as task_registry
    from stages.evaluate import score_outputs
    from stages.sft import target_text

    grid = [i / 20 for i in range(21)]

    def best_fraction(rows: list[dict], truth) -> tuple[float, float]:
        def mean_iou(a: float, b: float) -> float:
            texts = [target_text("tg", {"timestamps": [a * d(r), b * d(r)]}, think) for r in rows]
            return sum(task_registry.score("tg", t, {"timestamps": truth(r)}, think)["iou"]
                       for t, r in zip(texts, rows)) / max(len(rows), 1)
        return max(((a, b) for a in grid for b in grid if b > a), key=lambda ab: mean_iou(*ab))

    def d(r: dict) -> float:
        return float(r["problem"].get("duration") or 1.0)

    def letter(task: str) -> str:
        counts = Counter(r["solution"]["answer"] for r in train_rows if r["task"] == task)
        return counts.most_common(1)[0][0] if counts else "A"

    tg = [r for r in train_rows if r["task"] == "tg"]
    gqa = [r for r in train_rows if r["task"] == "gqa"]
    fractions = {
        "tg": best_fraction(tg, lambda r: r["solution"]["timestamps"]) if tg else (0.0, 1.0),
        "gqa": best_fraction(gqa, lambda r: r["solution"]["glue"][0]) if gqa else (0.0, 1.0),
    }
    texts = []
    for r in eval_rows:
        task = r["task"]
        if task in ("tg", "gqa"):
            a, b = fractions[task]
            interval = [round(a * d(r), 2), round(b * d(r), 2)]
            sol = {"timestamps": interval} if task == "tg" else {"answer": letter("gqa"), "glue": [interval]}
        elif task == "tracking":
            sol = {"boxes": [list(r["problem"]["init_box"])] * len(r["solution"]["boxes"])}
        else:
            sol = {"answer": letter(task)}
        texts.append(target_text(task, sol, think))
    return score_outputs(eval_rows, texts, think, protocol)[0]
