"""Loopback dev stack without docker: PostgreSQL (Debian binaries, a private cluster), an S3-compatible server
(moto), and an MLflow tracking server on either SQLite or PostgreSQL with artifacts on S3 or a folder.

Each service is a small class with start() (waits until healthy), stop(), env() and a state dict, so tests
start them in-process (tests/services/conftest.py) and the CLI starts them detached:

    python -m infra.devstack up [--backend postgres|sqlite] [--dir .dev-stack/devstack]   # prints `export ...`
    python -m infra.devstack env  [--dir .dev-stack/devstack]                             # the same exports again
    python -m infra.devstack down [--dir .dev-stack/devstack]

Everything binds to 127.0.0.1 on free ports. To add a service (e.g. a Prefect server), write a class with the
same four methods and add it to `up`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
# Credentials of the local S3 server only (moto accepts any); never real ones.
S3_KEY, S3_SECRET, S3_REGION = "devstack", "devstack-secret", "us-east-1"


class ServiceError(RuntimeError):
    """A service did not start; the message says which, why, and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path | None, n: int = 3000) -> str:
    if path and path.exists():
        return path.read_text(errors="replace")[-n:]
    return ""


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode}; log {log}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.25)
    raise ServiceError(f"{what} not healthy after {timeout:.0f} s; log {log}:\n{_tail(log)}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except (urllib.error.URLError, OSError):
        return False


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        # own process group: stop() ends the server and its workers, and nothing else
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, close_fds=True)


def stop_group(pid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap our own child so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ServerProcess:
    """A server running in its own process group (started with spawn): stop() ends it and its workers."""

    pid: int | None = None

    def stop(self) -> None:
        if self.pid:
            stop_group(self.pid)
            self.pid = None


# ---------------------------------------------------------------- PostgreSQL


def find_pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


class Postgres:
    """A private cluster (initdb + pg_ctl) in its own folder, trust auth on 127.0.0.1 only. As root the server
    runs as user `postgres` (PostgreSQL refuses to run as root), so the folder lives under the system temp dir,
    which that user can reach."""

    def __init__(self, root: str | os.PathLike | None = None, port: int | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="videorft-pg-"))
        self.port = port or free_port()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self, timeout: float = 60) -> "Postgres":
        initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o755)
            if self._run(["test", "-x", str(self.root)]).returncode != 0:
                raise ServiceError(f"user postgres cannot reach {self.root}: a parent folder is not "
                                   f"world-executable (use a folder under {tempfile.gettempdir()})")
        if not (self.data / "PG_VERSION").exists():
            r = self._run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--no-instructions"])
            if r.returncode != 0:
                raise ServiceError(f"initdb failed: {r.stderr.strip() or r.stdout.strip()}")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses={HOST} -c fsync=off"
        r = self._run([pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", str(int(timeout)),
                       "start"])
        if r.returncode != 0:
            raise ServiceError(f"pg_ctl start failed: {r.stderr.strip() or r.stdout.strip()}\n{_tail(self.log)}")
        return self

    def create_database(self, name: str) -> str:
        psql = find_pg_bin("psql") or "psql"
        r = self._run([psql, "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-v",
                       "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"'])
        if r.returncode != 0 and "already exists" not in r.stderr:
            raise ServiceError(f"CREATE DATABASE {name} failed: {r.stderr.strip()}")
        return self.uri(name)

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        pg_ctl = find_pg_bin("pg_ctl")
        if pg_ctl and (self.data / "postmaster.pid").exists():
            self._run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def state(self) -> dict:
        return {"kind": "postgres", "root": str(self.root), "port": self.port}


# ---------------------------------------------------------------- S3 (moto server over HTTP)


class S3Server(ServerProcess):
    """moto's S3-compatible HTTP server in its own process (a real server: clients talk HTTP to it)."""

    def __init__(self, root: str | os.PathLike, port: int | None = None, buckets: tuple[str, ...] = ("mlflow",)):
        self.root, self.port, self.buckets = Path(root), port or free_port(), buckets
        self.log = self.root / "s3.log"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION,
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self, timeout: float = 30) -> "S3Server":
        self.proc = spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)], self.log)
        self.pid = self.proc.pid
        wait_until(lambda: http_ok(f"{self.endpoint}/moto-api/"), timeout, f"S3 server on {self.endpoint}",
                   self.proc, self.log)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET, region_name=S3_REGION)
        for b in self.buckets:
            s3.create_bucket(Bucket=b)
        return self

    def state(self) -> dict:
        return {"kind": "s3", "pid": self.pid, "port": self.port, "endpoint": self.endpoint}


# ---------------------------------------------------------------- MLflow tracking server


class MlflowServer(ServerProcess):
    """`mlflow server` on 127.0.0.1 with a SQLite or PostgreSQL backend store and proxied artifacts (a folder or
    s3://...; for S3 pass the S3 server's env so the server reaches it). Clients need only the tracking URI."""

    def __init__(self, root: str | os.PathLike, backend_store_uri: str | None = None,
                 artifacts_destination: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None, workers: int = 2):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts = artifacts_destination or str(self.root / "artifacts")
        self.port, self.extra_env, self.workers = port or free_port(), env or {}, workers
        self.log = self.root / "mlflow.log"
        self.pid: int | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", HOST, "--port", str(self.port),
               "--backend-store-uri", self.backend, "--artifacts-destination", self.artifacts,
               "--workers", str(self.workers)]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **self.extra_env}
        proc = spawn(cmd, self.log, env)
        self.pid = proc.pid
        wait_until(lambda: http_ok(f"{self.uri}/health"), timeout, f"MLflow server on {self.uri}", proc, self.log)
        return self

    def state(self) -> dict:
        return {"kind": "mlflow", "pid": self.pid, "port": self.port, "uri": self.uri, "backend": self.backend,
                "artifacts": self.artifacts}


# ---------------------------------------------------------------- CLI: up / env / down (infra/stack.py shares these)


@contextmanager
def starting(state_dir: Path, busy: str):
    """The frame of an `up`: a state folder without a state.json (else ServiceError "... exists: <busy>"), and a
    list to record services in; when the block fails, they are stopped (last first) and the error goes on."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / "state.json").exists():
        raise ServiceError(f"{state_dir}/state.json exists: {busy}")
    started: list = []
    try:
        yield started
    except Exception:
        for svc in reversed(started):
            svc.stop()
        raise


def up(state_dir: Path, backend: str) -> dict:
    state: dict = {"services": [], "env": {}}
    with starting(state_dir, "run `python -m infra.devstack down` first") as started:
        if backend == "postgres":
            pg = Postgres().start()
            started.append(pg)
            backend_uri = pg.create_database("mlflow")
            s3 = S3Server(state_dir).start()
            started.append(s3)
            ml = MlflowServer(state_dir / "mlflow", backend_uri, "s3://mlflow/artifacts", env=s3.env()).start()
            state["env"].update(s3.env())
        else:
            ml = MlflowServer(state_dir / "mlflow").start()
        started.append(ml)
    state["services"] = [s.state() for s in started]
    state["env"]["MLFLOW_TRACKING_URI"] = ml.uri
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))
    return state


def down(state_dir: Path) -> bool:
    """Stop every service of state_dir/state.json in reverse order; False when nothing was running."""
    path = state_dir / "state.json"
    if not path.exists():
        return False
    for svc in reversed(json.loads(path.read_text())["services"]):
        if svc["kind"] == "postgres":
            Postgres(svc["root"], svc["port"]).stop()
            shutil.rmtree(svc["root"], ignore_errors=True)
        elif svc.get("pid"):
            stop_group(svc["pid"])
    path.unlink()
    return True


def exports(state: dict) -> str:
    return "\n".join(f"export {k}={v}" for k, v in sorted(state["env"].items()))


def cli_parser(prog: str, doc: str, commands: list[str], state_dir: str, dir_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=commands)
    parser.add_argument("--dir", default=state_dir, help=dir_help)
    return parser


def run_command(name: str, command: Callable[[], int | None]) -> int:
    """A CLI command's exit code: its own (None: 0), or 1 with a one-line `<name>: reason` on stderr when a service
    did not start or a state file is missing."""
    try:
        return command() or 0
    except (ServiceError, FileNotFoundError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    parser = cli_parser("python -m infra.devstack", __doc__, ["up", "env", "down"], ".dev-stack/devstack",
                        "state, logs and SQLite files (default .dev-stack/devstack, git-ignored)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres",
                        help="MLflow backend store: postgres (+ S3 artifacts) or sqlite (+ local artifacts)")
    args = parser.parse_args(argv)
    state_dir = Path(args.dir).resolve()

    def command() -> None:
        if args.command == "up":
            print(exports(up(state_dir, args.backend)))
        elif args.command == "env":
            print(exports(json.loads((state_dir / "state.json").read_text())))
        elif not down(state_dir):
            print(f"devstack: nothing running ({state_dir / 'state.json'} not found)")

    return run_command("devstack", command)


if __name__ == "__main__":
    sys.exit(main())
