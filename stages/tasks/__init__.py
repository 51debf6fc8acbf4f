"""Tasks: the one task list of the project (TASKS) and, per task, everything about it in one module.

Each module stages/tasks/<name>.py owns its prompt fields, the one answer parser, rewards, evaluation metrics,
annotation adapters, SFT targets, blind answers and serving fields (the contract is CONTRACT below and
docs/tasks.md, "Add a task"). Training (reward functions) and evaluation (metrics) both go through this package;
nothing else parses model output or names a task. Task ids: tg (temporal grounding), gqa (grounded QA), tracking,
qa (multiple-choice QA).

Prompt templates are data: prompts/<task>.txt (asks for <think> then <answer>) and prompts/<task>_nothink.txt,
Python str.format templates with named fields (literal braces written {{ }}):
  tg: {sentence} {duration}   gqa: {question} {options} {duration}   qa: {question} {options}
  tracking: {object} {init_box} {num_boxes}
plus any other key of the problem. `prompt_dir` points at a folder of replacement files with the same names,
e.g. upstream's exact wording to evaluate its released checkpoints.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from . import grounded_qa, mcq, stvg, temporal_grounding, tracking
from .common import PROTOCOLS, check_protocol, completion_text
from .merge import gather_records, merge_records

# The one task list: one line per task module, in the order reports and plots show them.
TASKS: dict[str, ModuleType] = {
    temporal_grounding.NAME: temporal_grounding,
    grounded_qa.NAME: grounded_qa,
    tracking.NAME: tracking,
    mcq.NAME: mcq,
    stvg.NAME: stvg,
}
PROMPT_DIR = Path(__file__).parent / "prompts"
# What every task module defines (docs/tasks.md, "Add a task"); HOOKS are optional.
CONTRACT = ("NAME", "PARTS", "HEADLINE", "PLOT_IOU_FIELD", "INPUT", "PROBLEM_FIELDS", "prompt_fields", "parse",
            "score", "sample_metrics", "aggregate", "load_annotations", "target_text", "prior_solution",
            "blind_fit", "blind_solution")
HOOKS = ("bind_frames", "synthesize", "part_spans")
INPUTS = ("video", "frames")


def get_task(name: str) -> ModuleType:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


def _as_dict(value: Any) -> dict:
    """Problems and solutions may arrive as JSON strings (e.g. from a datasets column)."""
    return json.loads(value) if isinstance(value, str) else value


@lru_cache(maxsize=64)
def _template(task: str, think: bool, prompt_dir: str | None) -> tuple[Path, str]:
    folder = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    path = folder / f"{task}{'' if think else '_nothink'}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} not found (prompt_dir={prompt_dir!r})")
    return path, path.read_text(encoding="utf-8").rstrip("\n")


def render_prompt(task: str, problem: dict | str, think: bool = True, prompt_dir: str | None = None) -> str:
    """The user-turn text for one sample (the video is attached by the caller)."""
    module = get_task(task)
    path, template = _template(task, bool(think), str(prompt_dir) if prompt_dir else None)
    try:
        return template.format_map(module.prompt_fields(_as_dict(problem)))
    except KeyError as e:
        raise ValueError(f"template {path} needs field {e} that the {task} problem does not have") from None


def parse(task: str, text: str, protocol: str = "ours") -> Any:
    """The parsed answer (task-specific, JSON-able) or None. Never raises on any text.

    protocol: "ours" (the documented fixes) or "upstream" (VideoChat-R1's evaluation scripts); docs/tasks.md,
    "Two scoring protocols". Training rewards always use "ours".
    """
    return get_task(task).parse(completion_text(text), protocol)


def score(task: str, text: str, solution: dict | str, think: bool = True) -> dict[str, float]:
    """Named reward parts; the total reward is their unweighted sum. `think` selects the expected layout."""
    return get_task(task).score(completion_text(text), _as_dict(solution), think)


def sample_metrics(task: str, text: str, solution: dict | str, protocol: str = "ours") -> dict[str, Any]:
    """Per-sample metric inputs under a scoring protocol (see parse), JSON-able; feed a list of them to aggregate()."""
    return get_task(task).sample_metrics(completion_text(text), _as_dict(solution), protocol)


def part_spans(task: str, text: str, solution: dict | str) -> tuple[str, list[tuple[int, int]], list[float]] | None:
    """(reward part, character spans in the completion text, each span's share of that part) for tasks whose part
    is a mean over pieces of the answer (tracking: one IoU per box), else None (stages/rl/box_credit.py)."""
    hook = getattr(get_task(task), "part_spans", None)
    return hook(completion_text(text), _as_dict(solution)) if hook is not None else None


def aggregate(task: str, rows: list[dict]) -> dict[str, float]:
    """Task metrics over samples (fractions in [0, 1]) plus `count`; an empty list gives zeros and count 0."""
    return get_task(task).aggregate(list(rows))


def headline() -> dict[str, str]:
    """{task: the metric plots, reports, summaries and the registry lead with}, in TASKS order."""
    return {name: module.HEADLINE for name, module in TASKS.items()}


def plot_iou_fields() -> dict[str, str]:
    """{task: its per-sample overlap field drawn in the IoU histograms}, for the tasks that have one."""
    return {name: module.PLOT_IOU_FIELD for name, module in TASKS.items() if module.PLOT_IOU_FIELD}


def load_annotations(task: str, path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """One task's annotations in its public format -> (samples, rejected); an unreadable file raises ValueError."""
    return get_task(task).load_annotations(path, policy)


def target_text(task: str, solution: dict, think: bool = True) -> str:
    """The answer `solution` written in the layout the task's prompt asks for (and its parser reads back)."""
    return get_task(task).target_text(solution, think)


def prior_solution(task: str, row: dict, rng: random.Random) -> dict:
    """A well-formed answer drawn from the task's prior, ignoring the video."""
    return get_task(task).prior_solution(row, rng)


def aggregate_records(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """{task: that task's aggregate() over the "metrics" of all its records}, tasks in sorted order."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for k, r in enumerate(records):
        try:
            by_task[str(r["task"])].append(r["metrics"])
        except (KeyError, TypeError):
            raise ValueError(f"record {k} has no 'task' and 'metrics': {r!r:.200}") from None
    return {task: aggregate(task, rows) for task, rows in sorted(by_task.items())}


def score_outputs(rows: list[dict], outputs: list[str], think: bool = True, protocol: str = "ours",
                  keep_unscorable: bool = False) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Score model outputs against their rows ({"id", "task", "solution", ...}, one output each, in order):
    (per-task aggregated metrics, one record per row {"id", "task", "output", "parsed", "rewards", "metrics"}).

    Answers are parsed and metric inputs computed under the scoring `protocol`; reward parts are always
    training's. keep_unscorable: a row whose own annotation its task cannot score (e.g. answer "H") gets the
    record {"id", "task", "error"} and stays out of the metrics, instead of raising.
    """
    check_protocol(protocol)
    records = []
    for r, text in zip(rows, outputs, strict=True):
        task = r["task"]
        get_task(task)  # an unknown task is an error, never an unscorable row
        try:
            records.append({
                "id": r["id"], "task": task, "output": text,
                "parsed": parse(task, text, protocol),
                "rewards": score(task, text, r["solution"], think=think),
                "metrics": sample_metrics(task, text, r["solution"], protocol),
            })
        except (KeyError, TypeError, ValueError) as e:
            if not keep_unscorable:
                raise
            records.append({"id": r["id"], "task": task, "error": f"{type(e).__name__}: {e}"})
    return aggregate_records(r for r in records if "metrics" in r), records


def reward_names(tasks: list[str]) -> list[str]:
    return [f"{t}_{part}" for t in tasks for part in get_task(t).PARTS]


def _reward_function(task_name: str, part: str, think: bool) -> Callable[..., list[float | None]]:
    def reward(prompts, completions, completion_ids=None, task=None, solution=None, **kwargs):
        if task is None or solution is None:
            raise ValueError("reward functions need the dataset's 'task' and 'solution' columns")
        n = len(completions)
        tasks = [task] * n if isinstance(task, str) else task
        solutions = [solution] * n if isinstance(solution, (dict, str)) else solution
        # None for other tasks' completions: TRL gathers every rank's rewards, then logs each function's nanmean,
        # i.e. over its own task's completions only, whichever rank holds them (defect 6; docs/tasks.md).
        return [
            score(task_name, c, s, think)[part] if t == task_name else None
            for c, t, s in zip(completions, tasks, solutions, strict=True)
        ]

    reward.__name__ = reward.__qualname__ = f"{task_name}_{part}"
    return reward


def reward_functions(tasks: list[str], think: bool = True) -> list[Callable[..., list[float | None]]]:
    """One TRL GRPO reward function per (task, reward part), named f"{task}_{part}" (e.g. tg_iou)."""
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"duplicate task in {tasks}")
    return [_reward_function(t, part, think) for t in tasks for part in get_task(t).PARTS]


__all__ = [
    "TASKS",
    "CONTRACT",
    "HOOKS",
    "INPUTS",
    "PROTOCOLS",
    "PROMPT_DIR",
    "get_task",
    "headline",
    "plot_iou_fields",
    "load_annotations",
    "target_text",
    "prior_solution",
    "score_outputs",
    "render_prompt",
    "parse",
    "score",
    "sample_metrics",
    "part_spans",
    "aggregate",
    "reward_names",
    "reward_functions",
    "merge_records",
    "gather_records",
    "aggregate_records",
]
