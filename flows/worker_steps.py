"""Deployment steps that run on the worker, at run time (infra/prefect/prefect.yaml's `pull:`).

Each machine has its own checkout of the repository (its DVC workspace); the worker's environment names it.
Prefect's own `set_working_directory` with "{{ $VIDEORFT_WORKDIR }}" would not do: `prefect deploy` fills such
placeholders from the DEPLOYING shell, so every worker would get the deployer's path.
"""
from __future__ import annotations

import os
from pathlib import Path

WORKDIR = "VIDEORFT_WORKDIR"


def enter_workdir(variable: str = WORKDIR) -> dict[str, str]:
    """chdir into the checkout named by the worker's `variable`; fail with a clear message when it is unusable."""
    directory = os.environ.get(variable)
    if not directory:
        raise RuntimeError(f"{variable} is not set on this worker: start it in its checkout with "
                           f"`{variable}=$PWD prefect worker start --pool <pool>`")
    if not (Path(directory) / "dvc.yaml").is_file():
        raise RuntimeError(f"{variable}={directory} is not a checkout of the pipeline (no dvc.yaml there)")
    os.chdir(directory)
    return {"directory": str(Path(directory).resolve())}
