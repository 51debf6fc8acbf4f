"""Machines of the flow tests: each is a separate copy of the repository (its DVC workspace) with a
`prefect worker` process, sharing nothing with the others but the stack (tests/flows/conftest.py)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.stack import DVC_REMOTE
from tests.pipeline.conftest import make_workspace, sh, workspace_env  # noqa: F401 (for the tests)

ZOMBIE_AFTER_S = 60  # two missed heartbeats (30 s each) before a run whose machine died is marked Crashed


def stack_env(stack: dict, ws: Path, **extra) -> dict:
    """What a machine of the stack runs with: the stack's variables, the workspace importable, quick polling."""
    return workspace_env(ws, **{**stack["env"], "PREFECT_WORKER_QUERY_SECONDS": "1", "VIDEORFT_WORKDIR": str(ws),
                                **extra})


def deploy(ws: Path, env: dict) -> None:
    """`prefect deploy` from infra/prefect/prefect.yaml, as an operator does."""
    sh([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all", "--prefect-file",
        "infra/prefect/prefect.yaml"], ws, env, timeout=300)


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc), whatever their session."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Worker:
    """`prefect worker start --pool <pool>` in a workspace, as its own process group."""

    def __init__(self, pool: str, ws: Path, env: dict):
        self.pool, self.ws, self.env = pool, ws, env
        self.log = ws / f"worker-{pool}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "worker", "start",
                                          "--pool", self.pool], cwd=self.ws, env=self.env, stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill_machine(self) -> list[int]:
        """The machine dies: SIGKILL the worker and every process under it (flow runs have their own sessions)."""
        victims = [self.proc.pid] + descendants(self.proc.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        return victims

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in descendants(self.proc.pid):  # flow runs still going (a failed test): end them too
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.send_signal(signal.SIGINT)  # a worker ignores SIGTERM while it shuts down its runs
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def prefect_client(stack: dict):
    """A sync Prefect client on the stack's server (settings scoped to the block)."""
    from contextlib import contextmanager

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextmanager
    def _client():
        with temporary_settings({PREFECT_API_URL: stack["env"]["PREFECT_API_URL"]}):
            with get_client(sync_client=True) as client:
                yield client

    return _client()


def wait_for(check, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_final(stack: dict, flow_run_id, timeout: float):
    """The flow run once it reached a final state."""
    def check():
        with prefect_client(stack) as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state and run.state.is_final() else None

    return wait_for(check, timeout, f"flow run {flow_run_id} to finish", interval=2)


def child_runs(stack: dict, parent_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with prefect_client(stack) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))


def remote_keys(stack: dict, bucket: str = "dvc") -> set[str]:
    import boto3

    e = stack["env"]
    s3 = boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"], region_name=e["AWS_DEFAULT_REGION"])
    keys, token = set(), None
    while True:
        page = s3.list_objects_v2(Bucket=bucket, **({"ContinuationToken": token} if token else {}))
        keys |= {o["Key"] for o in page.get("Contents", [])}
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def assert_remote_consistent(stack: dict) -> set[str]:
    """Every directory manifest in the DVC remote lists only files the remote holds (no half-pushed output)."""
    import json

    import boto3

    e = stack["env"]
    s3 = boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"], region_name=e["AWS_DEFAULT_REGION"])
    keys = remote_keys(stack)
    prefix = DVC_REMOTE.split("/", 3)[3] + "/files/md5/"
    for key in keys:
        if key.endswith(".dir"):
            listing = json.loads(s3.get_object(Bucket="dvc", Key=key)["Body"].read())
            missing = [f["relpath"] for f in listing if f"{prefix}{f['md5'][:2]}/{f['md5'][2:]}" not in keys]
            assert not missing, f"{key} lists files the remote lacks: {missing}"
    return keys
