"""Tasks: prompt templates, the one answer parser, rewards and evaluation metrics, per task.

Training (reward functions) and evaluation (metrics) both go through this package; nothing else parses model
output. Task ids: tg (temporal grounding), gqa (grounded QA), tracking, qa (multiple-choice QA).

Prompt templates are data: prompts/<task>.txt (asks for <think> then <answer>) and prompts/<task>_nothink.txt,
Python str.format templates with named fields (literal braces written {{ }}):
  tg: {sentence} {duration}   gqa: {question} {options} {duration}   qa: {question} {options}
  tracking: {object} {init_box} {num_boxes}
plus any other key of the problem. `prompt_dir` points at a folder of replacement files with the same names,
e.g. upstream's exact wording to evaluate its released checkpoints.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import grounded_qa, mcq, temporal_grounding, tracking
from .common import PROTOCOLS, completion_text

TASKS: dict[str, ModuleType] = {
    temporal_grounding.NAME: temporal_grounding,
    grounded_qa.NAME: grounded_qa,
    tracking.NAME: tracking,
    mcq.NAME: mcq,
}
PROMPT_DIR = Path(__file__).parent / "prompts"


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


def aggregate(task: str, rows: list[dict]) -> dict[str, float]:
    """Task metrics over samples (fractions in [0, 1]) plus `count`; an empty list gives zeros and count 0."""
    return get_task(task).aggregate(list(rows))


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


# after aggregate(), which merge uses
from .merge import aggregate_records, gather_records, merge_records  # noqa: E402

__all__ = [
    "TASKS",
    "PROTOCOLS",
    "PROMPT_DIR",
    "get_task",
    "render_prompt",
    "parse",
    "score",
    "sample_metrics",
    "aggregate",
    "reward_names",
    "reward_functions",
    "merge_records",
    "gather_records",
    "aggregate_records",
]
