"""Per-task reward means and evaluation metrics with two real processes holding different tasks.

Upstream mixed per-task reward metrics across ranks holding different tasks (reference section 8, defect 6) and
its eval scripts never merged ranks (defect 8). Here two CPU processes (torchrun, gloo) run two GRPO steps of
the real trainer with the task reward functions: in step 1 rank 0 holds only tg prompts and rank 1 only qa
prompts; in step 2 both ranks hold tg, in different amounts. TRL 1.16 gathers every reward function's column
from all ranks before taking the nan-mean, and our functions return None for other tasks, so each logged
rewards/<task>_<part>/mean must equal the mean of that part over exactly that task's completions, whichever
rank produced them. The expected values are recomputed here from the completions each rank saw.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from stages import tasks as T

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
WORKER = Path(__file__).with_name("_multirank_worker.py")
TASKS = ["tg", "qa"]
G = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(frame_files):
    def tg(i, ts):
        return {"id": f"tg{i}", "task": "tg", "prompt": f"When does event {i} happen?", "frames": frame_files[i % 4],
                "fps": 2.0, "solution": {"timestamps": ts}}

    def qa(i, letter):
        return {"id": f"qa{i}", "task": "qa", "prompt": f"Which option {i}?", "frames": frame_files[(i + 1) % 4],
                "fps": 2.0, "solution": {"answer": letter}}

    # unshuffled, 3 prompts x G per rank per step: step 1 rank 0 = tg0-2, rank 1 = qa0-2;
    # step 2 rank 0 = tg3, qa3, tg4 and rank 1 = tg5, qa4, qa5
    return [tg(0, [1, 5]), tg(1, [2, 5]), tg(2, [0, 2]), qa(0, "B"), qa(1, "A"), qa(2, "C"),
            tg(3, [1, 2]), qa(3, "B"), tg(4, [0, 5]), tg(5, [2, 4]), qa(4, "C"), qa(5, "A")]


@pytest.fixture(scope="module")
def run(tiny_model_dir, frame_files, tmp_path_factory):
    return run_worker(tiny_model_dir, frame_files, tmp_path_factory.mktemp("multirank"))


def run_worker(model_dir, frame_files, out: Path, **options) -> dict:
    """Two GRPO steps of _multirank_worker.py on two CPU processes; `options` go into its spec (deepspeed: a
    config path; per_row_video: encode every completion's copy of the video)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "spec.json"
    spec.write_text(json.dumps({"model_dir": model_dir, "rows": rows(frame_files), "out_dir": str(out),
                                "seed": 0, **options}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    per_rank = {r: [json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    return {
        "calls": per_rank,
        "log": json.loads((out / "log_history.json").read_text()),
        "merged": json.loads((out / "merged_metrics.json").read_text()),
    }


def completions(per_rank: dict, step: int) -> dict[int, list[dict]]:
    """Each rank's completions of one step (one reward function's calls see every completion once)."""
    first = T.reward_names(TASKS)[0]
    return {r: [c for c in calls if c["step"] == step and c["name"] == first] for r, calls in per_rank.items()}


def test_step_one_ranks_hold_different_tasks(run):
    ranks = completions(run["calls"], 0)
    assert {c["task"] for c in ranks[0]} == {"tg"} and len(ranks[0]) == 3 * G
    assert {c["task"] for c in ranks[1]} == {"qa"} and len(ranks[1]) == 3 * G
    step2 = completions(run["calls"], 1)
    assert sum(c["task"] == "tg" for c in step2[0]) == 2 * G and sum(c["task"] == "tg" for c in step2[1]) == G


def test_reward_functions_score_own_task_and_skip_others(run):
    for calls in run["calls"].values():
        for c in calls:
            task, part = c["name"].split("_", 1)
            expected = T.score(task, c["text"], c["solution"], think=False)[part] if c["task"] == task else None
            assert c["value"] == expected, c


def expected_means(per_rank: dict, step: int) -> dict[str, float]:
    values = defaultdict(list)
    for calls in completions(per_rank, step).values():
        for c in calls:
            for part, v in T.score(c["task"], c["text"], c["solution"], think=False).items():
                values[f"{c['task']}_{part}"].append(v)
    return {name: sum(v) / len(v) for name, v in values.items()}


@pytest.mark.parametrize("step", [0, 1])
def test_logged_per_task_means_are_over_each_tasks_completions(run, step):
    logged = next(h for h in run["log"] if h.get("step") == step + 1 and "loss" in h)
    expected = expected_means(run["calls"], step)
    assert set(expected) == set(T.reward_names(TASKS))
    for name, value in expected.items():
        assert logged[f"rewards/{name}/mean"] == pytest.approx(value, abs=1e-6), name
    if step == 0:
        # the check can fail: with nonzero means, logging one rank's own mean (None for the other task) or
        # counting the other task's completions as 0 (half the value) would both differ
        for task in TASKS:
            assert any(expected[f"{task}_{part}"] > 0 for part in T.get_task(task).PARTS), (task, expected)


def test_evaluation_metrics_merge_every_rank_once(run):
    records = [{"task": c["task"], "metrics": T.sample_metrics(c["task"], c["text"], c["solution"])}
               for step in (0, 1) for calls in completions(run["calls"], step).values() for c in calls]
    assert run["merged"]["records"] == len(records) == 2 * 2 * 3 * G  # rank 1's padded repeat counted once
    expected = T.aggregate_records(records)
    assert set(run["merged"]["metrics"]) == set(expected) == set(TASKS)
    for task, metrics in expected.items():
        assert run["merged"]["metrics"][task] == pytest.approx(metrics), task
    assert {t: m["count"] for t, m in expected.items()} == {"tg": 6 * G, "qa": 6 * G}
