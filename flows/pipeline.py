"""Prefect flow running the same DVC pipeline: one task per stage, `dvc repro --single-item <stage>`, in order.

Either entry point works: `dvc repro` or this flow (ephemeral Prefect server by default, a real one when
PREFECT_API_URL is set). DVC decides what is up to date, so a flow run after `dvc repro` re-runs nothing.
"""
from __future__ import annotations

import subprocess
import sys

from prefect import flow, get_run_logger, task

from stages import graph


@task(retries=1, retry_delay_seconds=5)
def run_stage(stage: str, force: bool = False) -> str:
    """One DVC stage. No Prefect import in stages/: the flow only orchestrates."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    logger.info(proc.stdout[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return stage


@flow(name="videorft-pipeline")
def pipeline(stages: list[str] | None = None, force: bool = False) -> list[str]:
    """`stages` (default: all) in the order of this directory's dvc.yaml, which `dvc repro` runs too."""
    order = graph.stage_names()
    done = []
    for stage in stages or order:
        if stage not in order:
            raise ValueError(f"unknown stage {stage!r}; stages are {order}")
        done.append(run_stage(stage, force))
    return done


if __name__ == "__main__":
    pipeline()
