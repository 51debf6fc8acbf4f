"""Reference lines a model can reach without looking at the video.

`blind_reference`: the best blind answer fit on the training set, per task its module's blind_fit / blind_solution
(one interval as fractions of the duration, the most frequent letter, the static tracker). A gain up to this line
can come from learning the benchmark's priors alone; above it, the model uses the video. `reference_metrics`:
random well-formed answers drawn from each task's prior (prior_solution). Evaluate reports the first beside
candidate and base; the micro-reproduction (recipes/micro_repro.py) draws both on its curve. `shuffled_line`:
a model's own answers scored against other samples of their task, the test of whether its answers depend on
their sample at all (a model can gain by moving one constant answer towards the blind line).
"""
from __future__ import annotations

import random

import numpy as np

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


def shuffled_line(rows: list[dict], outputs: list[str], rounds: int, seed: int = 0, level: float = 0.95,
                  protocol: str = "ours") -> dict:
    """Do the model's answers follow their samples? Its own answers (outputs, one per row), each scored against
    another sample of the same task: the answers are permuted within each task `rounds` times (seeded) and every
    permutation aggregated as the task does. Per task and metric: `mean` over the permutations and `lo`/`hi`, the
    central `level` range of the permuted values. A metric inside that range is what the same answers score on
    samples they were not given: they do not depend on their sample (video and prompt; where the prompt carries
    the answer's content, as QA's options or tracking's initial box do, above the range need not mean the pixels
    are used). A pair the task cannot score (an answer letter the other question does not offer) is left out."""
    rng = np.random.default_rng(seed)
    memo: dict[tuple[str, int], dict | None] = {}  # (answer, solution's row): near-constant answers repeat pairs

    def metrics(text: str, row: int) -> dict | None:
        if (text, row) not in memo:
            try:
                memo[text, row] = task_registry.sample_metrics(rows[row]["task"], text, rows[row]["solution"], protocol)
            except (KeyError, TypeError, ValueError):
                memo[text, row] = None
        return memo[text, row]

    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_task.setdefault(r["task"], []).append(i)
    out = {}
    for task, idx in sorted(by_task.items()):
        values: dict[str, list[float]] = {}
        for _ in range(rounds):
            perm = rng.permutation(len(idx))
            scored = [m for k, j in zip(idx, perm) if (m := metrics(outputs[k], idx[j])) is not None]
            for name, v in task_registry.aggregate(task, scored).items():
                if name != "count":
                    values.setdefault(name, []).append(float(v))
        tail = (1 - level) / 2 * 100
        out[task] = {name: {"mean": round(float(np.mean(v)), 6), "lo": round(float(np.percentile(v, tail)), 6),
                            "hi": round(float(np.percentile(v, 100 - tail)), 6)} for name, v in values.items()}
    return out
