"""The whole loopback stack without docker: PostgreSQL, an S3-compatible server, MLflow and a Prefect server, plus
what the flows expect to find in Prefect (work pools, the GPU concurrency limit, result storage on S3, the
zombie-run automation). PostgreSQL, S3 and MLflow come from infra/devstack.py; this module adds Prefect.

    python -m infra.stack up [--dir .dev-stack] [--backend postgres|sqlite] [--gpu-slots 1]
    python -m infra.stack status [--dir .dev-stack]
    python -m infra.stack down [--dir .dev-stack]
    python -m infra.stack configure            # only the Prefect objects, against $PREFECT_API_URL (compose init)

`up` writes <dir>/stack.env (`export` lines: PREFECT_API_URL, MLFLOW_TRACKING_URI, MLFLOW_S3_ENDPOINT_URL, AWS_*,
VIDEORFT_DVC_REMOTE_URL, ...): `source .dev-stack/stack.env` points every videorft, prefect, mlflow and dvc
command at the stack. Everything binds to 127.0.0.1 on free ports; infra/dev-stack.sh wraps this module.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from infra.devstack import (HOST, MlflowServer, Postgres, S3Server, ServerProcess, ServiceError, cli_parser, down,
                            free_port, http_ok, run_command, spawn, starting, wait_until)

BUCKETS = ("mlflow", "dvc", "prefect")         # MLflow artifacts, the DVC remote, Prefect results
DVC_REMOTE = "s3://dvc/store"
RESULTS_BLOCK = "videorft-results"              # remote-file-system block: results readable from every machine
POOLS = {"cpu": "process", "gpu": "process"}   # k8s: infra/k8s/gpu-job-template.json as the gpu pool's template
GPU_LIMIT = "gpu"
HEARTBEAT_S = 30                                 # flow run heartbeats (Prefect's minimum) ...
ZOMBIE_AFTER_S = 90                              # ... and how long without one before a run is marked Crashed
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
         "DVC_NO_ANALYTICS": "1"}


class PrefectServer(ServerProcess):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME, on SQLite (default) or PostgreSQL."""

    def __init__(self, root: str | os.PathLike, database_url: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None):
        self.root = Path(root)
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.root / 'prefect.db'}"
        self.port, self.extra_env = port or free_port(), env or {}
        self.log = self.root / "prefect.log"
        self.pid: int | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.uri}/api"

    def start(self, timeout: float = 120) -> "PrefectServer":
        self.root.mkdir(parents=True, exist_ok=True)
        # The UI asks /ui-settings where the API is: without these it would be Prefect's default port
        # (127.0.0.1:4200), not this server's, and the UI would show "Can't connect to Server API".
        env = {**os.environ, **QUIET, "PREFECT_HOME": str(self.root / "home"),
               "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url, "PREFECT_SERVER_API_HOST": HOST,
               "PREFECT_SERVER_API_PORT": str(self.port), "PREFECT_UI_API_URL": self.api_url, **self.extra_env}
        env.pop("PREFECT_API_URL", None)  # the server must not talk to another one
        cmd = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", HOST,
               "--port", str(self.port), "--analytics-off"]
        proc = spawn(cmd, self.log, env)
        self.pid = proc.pid
        wait_until(lambda: http_ok(f"{self.api_url}/health"), timeout, f"Prefect server on {self.uri}", proc,
                   self.log)
        return self

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url}

    def state(self) -> dict:
        return {"kind": "prefect", "pid": self.pid, "port": self.port, "uri": self.uri,
                "database": self.database_url.split("@")[-1]}


def configure_prefect(gpu_slots: int = 1, s3_endpoint: str | None = None, results_url: str | None = None,
                      zombie_after_s: int = ZOMBIE_AFTER_S, api_url: str | None = None) -> dict:
    """Create or update what the flows use, on the server of `api_url` (default PREFECT_API_URL): process work
    pools `cpu` and `gpu`
    (the gpu pool's concurrency = GPU slots), the global concurrency limit `gpu` (train-stage holds one slot per
    GPU it uses), the S3 result-storage block (when `results_url`), and the automation that marks a run whose
    heartbeats stopped (machine or worker gone) Crashed, so the retrain flow waiting on it fails instead of
    waiting forever."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url} if api_url else {}):
        return _configure(gpu_slots, s3_endpoint, results_url, zombie_after_s)


def _configure(gpu_slots: int, s3_endpoint: str | None, results_url: str | None, zombie_after_s: int) -> dict:
    from prefect import get_client
    from prefect.client.schemas.actions import (GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate,
                                                WorkPoolCreate, WorkPoolUpdate)
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    done: dict = {"work_pools": dict(POOLS), "gpu_slots": gpu_slots}
    with get_client(sync_client=True) as client:
        for name, kind in POOLS.items():
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=kind))
            except ObjectAlreadyExists:
                pass
        client.update_work_pool("gpu", WorkPoolUpdate(concurrency_limit=gpu_slots))
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=gpu_slots))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=gpu_slots))
    if results_url:
        from prefect.filesystems import RemoteFileSystem

        settings = {"client_kwargs": {"endpoint_url": s3_endpoint}} if s3_endpoint else {}
        RemoteFileSystem(basepath=results_url, settings=settings).save(RESULTS_BLOCK, overwrite=True)
        done["results_block"] = f"remote-file-system/{RESULTS_BLOCK}"
    done["automation"] = _zombie_automation(zombie_after_s)
    return done


def _zombie_automation(after_s: int) -> str:
    """Prefect's documented zombie-run detector (runs emit heartbeats every PREFECT_FLOWS_HEARTBEAT_FREQUENCY s)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    name = "videorft: crash runs without heartbeats"
    try:
        Automation.read(name=name).delete()  # re-configuring replaces it
    except ValueError:
        pass
    Automation(
        name=name,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s} s: its machine or worker is gone")],
    ).create()
    return name


def up(state_dir: Path, backend: str = "postgres", gpu_slots: int = 1, zombie_after_s: int = ZOMBIE_AFTER_S,
       postgres: Postgres | None = None) -> dict:
    """Start PostgreSQL, S3, MLflow and Prefect (or, with backend sqlite: MLflow and Prefect on SQLite, DVC on a
    local folder remote), configure Prefect, write state.json and stack.env. A running `postgres` cluster is used
    instead of starting one (and `down` leaves it to its owner)."""
    env: dict[str, str] = {**QUIET, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    with starting(state_dir, "the stack is up (or was not stopped): infra/dev-stack.sh down first") as started:

        def start(service):  # recorded before it starts: a service that fails to get healthy is stopped too
            started.append(service)
            return service.start()

        if backend == "postgres":
            # not under state_dir: the postgres user must reach the cluster folder (a 0700 home would block it)
            pg = postgres or start(Postgres(Path(tempfile.mkdtemp(prefix="videorft-stack-pg-"))))
            s3 = start(S3Server(state_dir / "s3", buckets=BUCKETS))
            env.update(s3.env())
            mlflow = start(MlflowServer(state_dir / "mlflow", pg.create_database("mlflow"), "s3://mlflow/artifacts",
                                        env=s3.env()))
            prefect = start(PrefectServer(state_dir / "prefect",
                                          pg.create_database("prefect").replace("+psycopg2", "+asyncpg")))
            env.update({"VIDEORFT_DVC_REMOTE_URL": DVC_REMOTE, "VIDEORFT_DVC_REMOTE_ENDPOINT": s3.endpoint,
                        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"remote-file-system/{RESULTS_BLOCK}"})
        else:
            mlflow = start(MlflowServer(state_dir / "mlflow"))
            prefect = start(PrefectServer(state_dir / "prefect"))
            (state_dir / "dvc-remote").mkdir(exist_ok=True)
            env["VIDEORFT_DVC_REMOTE_URL"] = str(state_dir / "dvc-remote")
        env.update({"MLFLOW_TRACKING_URI": mlflow.uri, **prefect.env()})
        configured = configure_prefect(gpu_slots, env.get("AWS_ENDPOINT_URL"),
                                       "s3://prefect/results" if backend == "postgres" else None,
                                       zombie_after_s, prefect.api_url)
    state = {"services": [s.state() for s in started], "env": env, "prefect": configured, "backend": backend}
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))
    write_env_file(state_dir / "stack.env", env)
    return state


def write_env_file(path: Path, env: dict[str, str]) -> None:
    lines = ["# written by `infra/dev-stack.sh up`; `source` it to use the stack"]
    lines += [f"export {k}={v}" for k, v in sorted(env.items())]
    path.write_text("\n".join(lines) + "\n")


def status(state_dir: Path) -> dict[str, bool]:
    """Whether each service of a running stack answers its health check."""
    path = state_dir / "state.json"
    if not path.exists():
        raise ServiceError(f"no stack running here ({path} not found): infra/dev-stack.sh up")
    state = json.loads(path.read_text())
    out = {}
    for svc in state["services"]:
        if svc["kind"] == "postgres":
            out["postgres"] = (Path(svc["root"]) / "data" / "postmaster.pid").exists()
        elif svc["kind"] == "s3":
            out["s3"] = http_ok(f"{svc['endpoint']}/moto-api/")
        elif svc["kind"] == "mlflow":
            out["mlflow"] = http_ok(f"{svc['uri']}/health")
        elif svc["kind"] == "prefect":
            out["prefect"] = http_ok(f"{svc['uri']}/api/health")
    return out


def main(argv=None) -> int:
    parser = cli_parser("python -m infra.stack", __doc__, ["up", "down", "status", "env", "configure"], ".dev-stack",
                        "state, logs, stack.env (default .dev-stack)")
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres",
                        help="postgres: PostgreSQL + S3 (the real layout); sqlite: MLflow/Prefect on SQLite, "
                             "DVC remote in a folder")
    parser.add_argument("--gpu-slots", type=int, default=1, help="GPUs the gpu pool may use at once")
    args = parser.parse_args(argv)
    state_dir = Path(args.dir).resolve()

    def command() -> int | None:
        if args.command == "up":
            state = up(state_dir, args.backend, args.gpu_slots)
            print(f"stack up ({args.backend}); `source {state_dir / 'stack.env'}`")
            for svc in state["services"]:
                print(f"  {svc['kind']:<8} {svc.get('uri') or svc.get('endpoint') or 'port ' + str(svc['port'])}")
        elif args.command == "down":
            print("stack down" if down(state_dir) else f"nothing running ({state_dir / 'state.json'} not found)")
        elif args.command == "status":
            health = status(state_dir)
            for name, ok in health.items():
                print(f"  {name:<8} {'up' if ok else 'DOWN'}")
            return 0 if all(health.values()) else 1
        elif args.command == "env":
            print((state_dir / "stack.env").read_text(), end="")
        else:
            print(json.dumps(configure_prefect(args.gpu_slots, os.environ.get("AWS_ENDPOINT_URL"),
                                               os.environ.get("VIDEORFT_RESULTS_URL")), indent=2))
        return None

    return run_command("dev-stack", command)


if __name__ == "__main__":
    sys.exit(main())
