"""Scheduled retraining on one machine: `flow.serve`, no work pool and no worker.

`videorft serve` keeps a process that runs `retrain` on a cron schedule (and on demand from the Prefect UI or
`prefect deployment run retrain/<name>`), training in-process. Several machines: use the work pools of
infra/prefect/prefect.yaml instead. The process needs a Prefect server (PREFECT_API_URL): an ephemeral one would
vanish with it, and with it the schedule.
"""
from __future__ import annotations

import os
import signal
import threading


def serve(name: str = "nightly", cron: str | None = "0 3 * * *", timezone: str = "UTC",
          parameters: dict | None = None, limit: int = 1) -> None:
    """Serve `retrain` (and `train-stage`, so other machines can send training here) until interrupted."""
    from prefect import serve as prefect_serve
    from prefect.client.schemas.schedules import CronSchedule

    from flows.retrain import retrain, train_stage

    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit("videorft serve needs a Prefect server: start one (infra/dev-stack.sh up, then source "
                         "its env file) or set PREFECT_API_URL")
    if threading.current_thread() is threading.main_thread():
        # A job a non-interactive shell starts in the background (`videorft serve &` in a script) inherits SIGINT
        # ignored (POSIX), and Python keeps it so: Ctrl-C / kill -INT would do nothing. A service stops on SIGINT,
        # as `prefect worker start` does (it installs its own handler too); SIGTERM stops it either way.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    schedules = [CronSchedule(cron=cron, timezone=timezone)] if cron else None
    prefect_serve(
        retrain.to_deployment(name=name, schedules=schedules, parameters=parameters or {},
                              description="Scheduled retraining on this machine (videorft serve)"),
        train_stage.to_deployment(name=f"{name}-train", description="The train stage, for retrain runs elsewhere"),
        limit=limit,  # one run at a time: stages share this workspace (DVC's rwlock)
    )
