"""The deployment files, checked for what docker and kubernetes cannot be run here to check: infra/compose.yaml
(services, healthchecks, start order, wiring, GPU reservation, no secret in the file), infra/prefect/prefect.yaml
(against the flows it deploys) and the Kubernetes GPU job template (with the Prefect server's own validator)."""
import importlib
import inspect
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INTERPOLATION = re.compile(r"\$\{(\w+)(:?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    lines = (INFRA / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def test_compose_has_the_stack_and_healthchecks(compose):
    services = compose["services"]
    assert {"postgres", "s3", "mlflow", "prefect-server", "worker-cpu", "worker-gpu"} <= set(services)
    for name, svc in services.items():
        if svc.get("restart") != "no":  # long-running: must say when it is healthy
            assert "healthcheck" in svc and svc["healthcheck"]["test"], name
    assert services["postgres"]["image"].startswith("postgres:")
    assert "minio" in services["s3"]["image"] or "seaweedfs" in services["s3"]["image"]
    assert services["prefect-server"]["image"].startswith("prefecthq/prefect:3.8.8")


def test_compose_start_order_waits_for_health(compose):
    s = compose["services"]

    def deps(name):
        return {k: v["condition"] for k, v in s[name]["depends_on"].items()}

    assert deps("mlflow") == {"postgres": "service_healthy", "s3-init": "service_completed_successfully"}
    assert deps("prefect-server") == {"postgres": "service_healthy"}
    assert deps("prefect-init")["prefect-server"] == "service_healthy"
    for worker in ("worker-cpu", "worker-gpu"):
        assert deps(worker) == {"prefect-init": "service_completed_successfully", "mlflow": "service_healthy"}
    for name, svc in s.items():  # every dependency exists
        assert set(svc.get("depends_on", {})) <= set(s), name


def test_compose_wiring(compose):
    s = compose["services"]
    mlflow_cmd = " ".join(s["mlflow"]["command"])
    assert "--backend-store-uri" in mlflow_cmd
    assert "postgresql+psycopg2://" in mlflow_cmd and "@postgres:5432/mlflow" in mlflow_cmd
    assert "--artifacts-destination s3://mlflow/artifacts" in mlflow_cmd
    assert s["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"
    db = s["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert db.startswith("postgresql+asyncpg://") and db.endswith("@postgres:5432/prefect")
    init_sql = (INFRA / "postgres/init.sql").read_text()
    assert "CREATE DATABASE mlflow" in init_sql and "CREATE DATABASE prefect" in init_sql
    for worker, pool in (("worker-cpu", "cpu"), ("worker-gpu", "gpu")):
        svc = s[worker]
        assert svc["command"][:5] == ["prefect", "worker", "start", "--pool", pool]
        env = svc["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["VIDEORFT_DVC_REMOTE_URL"].startswith("s3://")
        assert env["VIDEORFT_DVC_REMOTE_ENDPOINT"] == "http://s3:9000"
        assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "remote-file-system/videorft-results"
        assert env["VIDEORFT_WORKDIR"]
    init = " ".join(s["prefect-init"]["command"])
    assert "python -m infra.stack configure" in init and "--prefect-file infra/prefect/prefect.yaml" in init
    buckets = " ".join(s["s3-init"]["command"])
    assert all(f"store/{b}" in buckets for b in ("mlflow", "dvc", "prefect"))
    for svc in s.values():  # published UIs bind where .env says (loopback by default)
        for port in svc.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), port


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` interpolation, nested defaults included (innermost first)."""
    inner = re.compile(r"\$\{(\w+):-([^${}]*)\}")
    while inner.search(value):
        value = inner.sub(lambda m: env.get(m.group(1)) or m.group(2), value)
    return value


@pytest.mark.parametrize("env, browser_api", [
    ({}, "http://127.0.0.1:4200/api"),
    ({"BIND_ADDRESS": "10.1.2.3"}, "http://10.1.2.3:4200/api"),
    ({"BIND_ADDRESS": "0.0.0.0", "PREFECT_UI_API_URL": "https://prefect.example.org/api"},
     "https://prefect.example.org/api"),
])
def test_compose_prefect_ui_finds_the_published_api(compose, env, browser_api):
    """The UI reads its API URL from the server (PREFECT_UI_API_URL): it must be where the API is published."""
    server = compose["services"]["prefect-server"]
    ui_api = interpolate(server["environment"]["PREFECT_UI_API_URL"], env)
    assert ui_api == browser_api
    [port] = server["ports"]
    host, published, container = interpolate(port, env).split(":")
    assert container == server["command"][server["command"].index("--port") + 1]
    if "PREFECT_UI_API_URL" not in env:
        assert ui_api == f"http://{host}:{published}/api"


def test_compose_gpu_worker_reserves_nvidia_gpus(compose):
    gpu = compose["services"]["worker-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == "${GPU_COUNT:-1}"
    assert "deploy" not in compose["services"]["worker-cpu"]


def test_compose_keeps_secrets_out_of_the_file(compose, env_example):
    for svc in compose["services"].values():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|_USER$", key):  # from infra/.env, never literal
                assert INTERPOLATION.fullmatch(str(value)), (key, value)
    for value in strings(compose):  # credentials inside URLs are variables too
        for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", value):
            assert user.startswith(("${", "$${")) and password.startswith(("${", "$${")), value
    text = (INFRA / "compose.yaml").read_text()
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if not (m.group(2) or "").startswith(":-")}
    assert required <= set(env_example), required - set(env_example)
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT).returncode == 0
    assert ignored, "infra/.env (the real secrets) must be git-ignored"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((INFRA / "prefect/prefect.yaml").read_text())


def load_entrypoint(entrypoint: str):
    path, func = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, func)


def test_prefect_yaml_deploys_the_flows_it_names(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule

    from infra.stack import POOLS

    deployments = {d["name"]: d for d in prefect_yaml["deployments"]}
    nightly, gpu = deployments["nightly"], deployments["gpu"]
    retrain, train_stage = load_entrypoint(nightly["entrypoint"]), load_entrypoint(gpu["entrypoint"])
    assert retrain.name == "retrain" and train_stage.name == "train-stage"
    for d, fl in ((nightly, retrain), (gpu, train_stage)):  # parameters are the flow's own
        assert set(d.get("parameters", {})) <= set(inspect.signature(fl.fn).parameters), d["name"]
        assert d["work_pool"]["name"] in POOLS
    assert nightly["parameters"]["train_deployment"] == f"{train_stage.name}/{gpu['name']}"
    assert nightly["work_pool"]["name"] == "cpu" and gpu["work_pool"]["name"] == "gpu"
    [schedule] = nightly["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron or zone
    assert gpu["work_pool"]["job_variables"]["env"]["CUDA_VISIBLE_DEVICES"]
    for d in (nightly, gpu):
        assert d["concurrency_limit"]["limit"] >= 1
    [step] = prefect_yaml["pull"]
    [(target, args)] = step.items()
    module, func = target.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), func))
    assert "{{" not in json.dumps(args)  # nothing for `prefect deploy` to fill in from the deploying shell


def test_workdir_step_fails_clearly(tmp_path, monkeypatch):
    from flows.worker_steps import enter_workdir

    monkeypatch.delenv("VIDEORFT_WORKDIR", raising=False)
    with pytest.raises(RuntimeError, match="VIDEORFT_WORKDIR is not set on this worker"):
        enter_workdir()
    monkeypatch.setenv("VIDEORFT_WORKDIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="no dvc.yaml"):
        enter_workdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(ROOT)
    assert enter_workdir() == {"directory": str(tmp_path.resolve())}
    assert Path.cwd() == tmp_path.resolve()


def test_k8s_gpu_job_template_is_valid_and_asks_for_gpus():
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values

    template = json.loads((INFRA / "k8s/gpu-job-template.json").read_text())
    WorkPoolCreate(name="gpu-k8s", type="kubernetes", base_job_template=template)  # the server's validator
    props = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    job = apply_values(template["job_configuration"], defaults)["job_manifest"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 == props["gpu_count"]["default"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"] and container["envFrom"][0]["secretRef"]["name"] == "videorft-stack"
    assert container["env"]["VIDEORFT_WORKDIR"] == "/app"
    assert "{{" not in json.dumps(job)
    text = json.dumps(template)
    assert not re.search(r"(?i)(password|secret_access_key|aws_secret)\W*[:=]", text)
