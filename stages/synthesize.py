"""Stage synthesize: generate the synthetic benchmark (videos, GOT-10k style frame folders, annotations).

The four built-in tasks share one generator (stages/datasets/synthetic.py); a task module may add its own data
through a `synthesize(p, root)` hook, called after the shared videos with its options in `synthesize.tasks`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from stages import tasks as task_registry
from stages.datasets import synthetic
from stages.params import SynthesizeParams, load_params


def synthesize(p: SynthesizeParams) -> dict:
    """The shared benchmark, then every registered task's own `synthesize` hook; returns counts (a hook's under
    its task name)."""
    summary = synthetic.synthesize(p)
    for name, module in task_registry.TASKS.items():
        if hasattr(module, "synthesize"):
            summary[name] = module.synthesize(p, Path(p.out_dir))
    return summary


def main() -> None:
    t0 = time.perf_counter()
    summary = synthesize(load_params().synthesize)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
