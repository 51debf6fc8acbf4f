"""A DVC workspace as the flows see it: the stages of dvc.yaml, their lock entries, and the three commands a
machine runs for one stage — pull the stage's inputs from the remote, `dvc repro --single-item`, push its outputs.

No Prefect here: the flows add retries, routing and tracking on top. Every command is a child process in the
caller's process group (no new session), so cancelling the flow run that owns it stops it too.
"""
from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml

from stages import graph
from stages.io import write_text

# Environment of a machine that hands data through a remote: the flows configure the workspace from it.
REMOTE_URL = "VIDEORFT_DVC_REMOTE_URL"
REMOTE_ENDPOINT = "VIDEORFT_DVC_REMOTE_ENDPOINT"
REMOTE_NAME = "videorft"
HEAD_LINES, TAIL_LINES = 10, 40  # what a failure message quotes: DVC's opening lines and the stage's last ones


class StageError(RuntimeError):
    """A stage failed in one phase (pull, repro, push, remote); the message names both and ends with the output."""

    def __init__(self, stage: str, phase: str, detail: str, returncode: int | None = None):
        self.stage, self.phase, self.returncode = stage, phase, returncode
        code = f" (exit {returncode})" if returncode is not None else ""
        super().__init__(f"stage {stage!r}: {phase} failed{code}: {detail}")


@dataclass
class StageOutcome:
    stage: str
    ran: bool                      # False: DVC found it up to date (or restored it from the run cache)
    seconds: float
    pulled: list[str] = field(default_factory=list)
    pushed: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_command(args: list[str], cwd: str | Path, env: dict | None = None,
                log: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run a command, streaming each output line to `log`; return (exit code, first and last lines)."""
    head: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    seen = 0
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            seen += 1
            (head if len(head) < HEAD_LINES else tail).append(line)
            if log and line.strip():
                log(line)
        skipped = ["..."] if seen > len(head) + len(tail) else []
        return proc.wait(), "\n".join(head + skipped + list(tail))
    finally:
        if proc.poll() is None:  # the caller is being torn down: do not leave the stage running
            proc.kill()
            proc.wait()


def dvc(ws: str | Path, *args: str, env: dict | None = None, log=None) -> tuple[int, str]:
    return run_command([sys.executable, "-m", "dvc", *args], ws, env, log)


def read_yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def stage_names(ws: str | Path) -> list[str]:
    """Stages in the order dvc.yaml lists them (the pipeline's order)."""
    return graph.stage_names(ws)


def _stage(ws: str | Path, stage: str) -> graph.Stage:
    found = graph.stage(ws, stage)
    if found is None:
        raise StageError(stage, "lookup", f"not a stage of {Path(ws) / 'dvc.yaml'}; stages are {stage_names(ws)}")
    return found


def upstream_inputs(ws: str | Path, stage: str) -> list[str]:
    """The deps of `stage` that another stage produces (and a machine may have to pull)."""
    return _stage(ws, stage).inputs_from(graph.read(ws))


def params_files(ws: str | Path, stage: str) -> list[str]:
    """The parameter files a stage reads (dvc.yaml `params:`; a bare key means params.yaml)."""
    found = graph.stage(ws, stage)
    files = []
    for f, _ in found.params if found else []:
        if f not in files and (Path(ws) / f).is_file():
            files.append(f)
    return files


def lock_entry(ws: str | Path, stage: str) -> dict | None:
    return read_yaml(Path(ws) / "dvc.lock").get("stages", {}).get(stage)


def set_lock_entry(ws: str | Path, stage: str, entry: dict) -> None:
    """Record another machine's result for `stage` in this workspace's dvc.lock (atomically)."""
    path = Path(ws) / "dvc.lock"
    lock = read_yaml(path) or {"schema": "2.0", "stages": {}}
    lock.setdefault("stages", {})[stage] = entry
    write_text(path, yaml.safe_dump(lock, sort_keys=False))


def uncached_files(ws: str | Path, stage: str) -> dict[str, str]:
    """Small outputs DVC keeps in git rather than the cache (metrics with cache: false): they travel as text."""
    found = graph.stage(ws, stage)
    outs = found.outs if found else []
    return {p: (Path(ws) / p).read_text() for p, cached in outs if not cached and (Path(ws) / p).is_file()}


def default_remote(ws: str | Path) -> str | None:
    """The workspace's default DVC remote (.dvc/config, overridden by .dvc/config.local), or None."""
    name = None
    for f in (".dvc/config", ".dvc/config.local"):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.read(Path(ws) / f)
        name = cp.get("core", "remote", fallback=name)
    return name


def configure_remote_from_env(ws: str | Path, env: dict | None = None) -> str | None:
    """Point the workspace's default remote at VIDEORFT_DVC_REMOTE_URL (+ endpoint) when set, in config.local
    (machine-specific, never committed). Returns the default remote's name (None: no remote, local mode)."""
    env = os.environ if env is None else env
    url = env.get(REMOTE_URL)
    if url:
        for args in (["remote", "add", "--local", "--force", "--default", REMOTE_NAME, url],
                     *([["remote", "modify", "--local", REMOTE_NAME, "endpointurl", env[REMOTE_ENDPOINT]]]
                       if env.get(REMOTE_ENDPOINT) else [])):
            rc, out = dvc(ws, *args, env=dict(env))
            if rc:
                raise StageError("*", "remote", f"dvc {' '.join(args[:3])} {url}: {out}", rc)
    return default_remote(ws)


@contextlib.contextmanager
def workspace_lock(ws: str | Path, log=None, owner: str = "", shared_with: str | None = None) -> Iterator[None]:
    """One flow run at a time per workspace (two `dvc repro` in one workspace fail on DVC's rwlock). The lock file
    names its holder; a run sent here by the holder itself (`shared_with`: a train-stage deployment whose worker
    uses the retrain run's own checkout) goes ahead, since the holder only waits for it."""
    path = Path(ws) / ".dvc" / "tmp" / "videorft-flow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip()
            if shared_with and holder == shared_with:
                if log:
                    log(f"workspace {ws} is held by flow run {holder}, which sent this run: sharing it")
                yield
                return
            if log:
                log(f"waiting for flow run {holder or '?'} to release workspace {ws} ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(owner)
            f.flush()
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def run_stage(ws: str | Path, stage: str, *, env: dict | None = None, remote: bool = False, force: bool = False,
              log=None) -> StageOutcome:
    """Pull the stage's inputs (when a remote is set), `dvc repro --single-item`, push its outputs."""
    t0 = time.monotonic()
    pulled = []
    if remote:
        pulled = upstream_inputs(ws, stage)
        if pulled:
            rc, out = dvc(ws, "pull", *pulled, env=env, log=log)
            if rc:
                raise StageError(stage, "pull", f"inputs {pulled} are not in this workspace's cache nor in the "
                                                f"remote (did the stage producing them push?)\n{out}", rc)
    rc, out = dvc(ws, "repro", "--single-item", stage, *(["--force"] if force else []), env=env, log=log)
    if rc:
        raise StageError(stage, "repro", out, rc)
    ran = f"Running stage '{stage}'" in out
    if remote:
        rc, push_out = dvc(ws, "push", stage, env=env, log=log)
        if rc:
            raise StageError(stage, "push", push_out, rc)
    return StageOutcome(stage, ran, round(time.monotonic() - t0, 2), pulled, remote)
