"""The operator's entry points: `infra/dev-stack.sh up|status|env|down` (the SQLite variant: every service up,
an env file that points clients at them, the Prefect UI pointed at its server's API, a clean stop) and
`videorft serve` (flow.serve: the retrain deployment with its cron schedule appears on the server while the
process runs)."""
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.flows.machines import prefect_client, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_dev_stack_script_up_status_env_down(tmp_path):
    env = {**os.environ, "DEV_STACK_DIR": str(tmp_path / "stack")}
    script = [str(ROOT / "infra/dev-stack.sh")]
    up = subprocess.run(script + ["up", "--backend", "sqlite"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        lines = (tmp_path / "stack/stack.env").read_text().splitlines()
        exported = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
        for url in (exported["PREFECT_API_URL"] + "/health", exported["MLFLOW_TRACKING_URI"] + "/health"):
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200, url
        assert Path(exported["VIDEORFT_DVC_REMOTE_URL"]).is_dir()
        ui = exported["PREFECT_API_URL"].removesuffix("/api")  # the UI asks the server where its API is
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as r:
            assert json.load(r)["api_url"] == exported["PREFECT_API_URL"]  # not Prefect's default :4200
        status = subprocess.run(script + ["status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and status.stdout.count(" up") == 2, status.stdout
        again = subprocess.run(script + ["up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "down first" in again.stderr  # one stack per folder
    finally:
        down = subprocess.run(script + ["down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stack down" in down.stdout, down.stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(exported["PREFECT_API_URL"] + "/health", timeout=5)
    status = subprocess.run(script + ["status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "no stack running here" in status.stderr


def test_serve_publishes_the_scheduled_retrain_deployment(stack):
    env = {**os.environ, **stack["env"]}
    serve = [sys.executable, "-m", "videorft", "serve", "--name", "served", "--cron", "15 4 * * *"]
    # started as a non-interactive shell starts a background job (`videorft serve &` in a script): SIGINT ignored
    proc = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        def deployments():  # serve creates them one after the other, then its runner starts polling: wait for both
            from prefect.client.schemas.objects import DeploymentStatus
            from prefect.exceptions import ObjectNotFound

            with prefect_client(stack) as client:
                try:
                    found = [client.read_deployment_by_name(n) for n in ("retrain/served", "train-stage/served-train")]
                except ObjectNotFound:
                    return None
            # READY = polled by a running runner; a SIGINT before that stops serve before its runner can pause them
            return found if all(d.status == DeploymentStatus.READY for d in found) else None

        found, _ = wait_for(deployments, 120, "videorft serve to publish retrain/served and its train stage and poll "
                            "for their runs", interval=2)
        [schedule] = found.schedules
        assert schedule.schedule.cron == "15 4 * * *" and schedule.active
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: serve stops even so, its deployment paused
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError("videorft serve ran on after SIGINT")
    with prefect_client(stack) as client:
        assert client.read_deployment_by_name("retrain/served").paused, out[-3000:]


def test_serve_without_a_server_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, "-m", "videorft", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "needs a Prefect server" in proc.stderr
