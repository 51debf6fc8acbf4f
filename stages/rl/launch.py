"""Multi-process launch of the train stage: with train.num_processes > 1, `python -m stages.train` re-executes
itself under `accelerate launch` (or torchrun) and waits; the workers see the launcher's environment and run the
stage core. A stage started by a launcher (LOCAL_RANK set: `accelerate launch -m stages.train` by hand, one
command per node for multi-node) never launches again."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

WORKER_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE")


def in_worker() -> bool:
    """True inside a process started by accelerate/torchrun/deepspeed."""
    return any(k in os.environ for k in WORKER_ENV)


def world_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def finish() -> None:
    """End a worker whose work is done, written and flushed: tear the process group down, then leave at once.
    Left to interpreter teardown, a rank of a finished run can abort in a C++ destructor ('terminate called
    without an active exception', exit -6; twice in CI on the two-process tests, once after
    destroy_process_group), and the launcher then reports the whole run as failed. A worker that gets here has
    nothing left to do, so it skips that teardown (os._exit). Not reached on an error: that exits as usual."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    if in_worker():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(p, module: str = "stages.train", port: int | None = None) -> list[str]:
    """The command that runs `python -m module` in p.num_processes processes on this machine."""
    port = port or free_port()
    launcher = p.launcher
    if launcher == "auto":
        import torch

        launcher = "accelerate" if torch.cuda.is_available() else "torchrun"  # accelerate's CPU path needs MPI
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc_per_node", str(p.num_processes), "--master_addr", "127.0.0.1",
                "--master_port", str(port), "-m", module]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if p.accelerate_config:
        cmd += ["--config_file", p.accelerate_config]
    else:
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["--num_processes", str(p.num_processes), "--main_process_port", str(port), "-m", module]


def relaunch(p, module: str = "stages.train") -> int:
    """Run the stage in p.num_processes processes; returns their exit status. Same process group as the caller
    (a cancelled Prefect flow run kills the workers with it)."""
    cmd = launch_command(p, module)
    print("train: launching", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode
