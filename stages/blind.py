"""Reference lines a model can reach without looking at the video.

`blind_reference`: the best blind answer fit on the training set, per task its module's blind_fit / blind_solution
(one interval as fractions of the duration, the most frequent letter, the static tracker). A gain up to this line
can come from learning the benchmark's priors alone; above it, the model uses the video. `reference_metrics`:
random well-formed answers drawn from each task's prior (prior_solution). Evaluate reports the first beside
candidate and base; the micro-reproduction (recipes/micro_repro.py) draws both on its curve.
"""
from __future__ import annotations

import random

from stages import tasks as task_registry


def reference_metrics(rows: list[dict], think: bool, seed: int) -> dict:
    """What answering from each task's prior, without looking at the video, scores (stages/sft.py's `format`
    targets): a random interval and letter, a tracker that never moves. The floor GRPO has to beat."""
    rng = random.Random(seed)
    texts = [task_registry.target_text(r["task"], task_registry.prior_solution(r["task"], r, rng), think)
             for r in rows]
    return task_registry.score_outputs(rows, texts, think)[0]


def blind_reference(train_rows: list[dict], eval_rows: list[dict], think: bool, protocol: str = "ours") -> dict:
    """The best a model can score WITHOUT looking at the video, fit on the training set (each task's blind_fit on
    its own training rows) and scored on eval_rows under the evaluation's scoring `protocol`. A GRPO gain up to
    this line can come from learning the benchmark's priors alone; above it, the model uses the video."""
    fits: dict[str, object] = {}
    texts = []
    for r in eval_rows:
        task = r["task"]
        module = task_registry.get_task(task)
        if task not in fits:
            fits[task] = module.blind_fit([t for t in train_rows if t["task"] == task], think)
        texts.append(module.target_text(module.blind_solution(fits[task], r), think))
    return task_registry.score_outputs(eval_rows, texts, think, protocol)[0]
