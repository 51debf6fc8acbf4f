"""Gated promotion and rollback against real MLflow servers (SQLite; PostgreSQL + S3 artifacts), through the
`videorft` command line, including two promotions racing from two processes. The gate reads each version's
per-sample rows from its registered model and decides on bootstrap intervals (tests/unit/test_promote_gate.py
covers the rule itself)."""
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from stages import register
from stages.params import MlflowParams, Params, PromoteParams, RegisterParams
from stages.promote import promote
from tests.eval_tables import base_values, metrics, noisy, samples, shifted

ROOT = Path(__file__).resolve().parents[2]
GATE = {"improve": {"tg.mIoU": 0.0, "tracking.AO": 0.0}, "keep": {"qa.accuracy": 0.10}}
BASE = base_values()


def videorft(args, tmp_path, server, name, **popen):
    params = tmp_path / "params.yaml"
    if not params.exists():
        params.write_text(yaml.safe_dump({"register": {"model_name": name}, "promote": GATE,  # one tolerance:
                                          "evaluate": {"general_tolerance": GATE["keep"]["qa.accuracy"]}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": server.uri}
    cmd = [sys.executable, "-m", "videorft"] + args + ["--params", str(params)]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def call(args, tmp_path, server, name):
    proc = videorft(args, tmp_path, server, name)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def registered(make_candidate, tmp_path, name, values, inputs="inputs-sha", with_samples=True) -> str:
    """A version whose evaluation answered 48 samples per task with `values` (the base answered BASE)."""
    table = samples(values, BASE, inputs)
    model_dir, eval_path, _ = make_candidate(metrics(table, "candidate"), metrics(table, "baseline"),
                                             table if with_samples else None)
    p = RegisterParams(model_name=name, out=str(tmp_path / "register.json"))
    return register.run(p, MlflowParams(), model_dir, eval_path, params=Params())["version"]


def checks_of(version) -> list[dict]:
    return json.loads(version.tags["promotion.checks"])


def decisions(version) -> list[dict]:
    return [json.loads(v) for k, v in sorted(version.tags.items()) if k.startswith("decision.")]


def test_gate_promotes_refuses_and_rollback_restores(mlflow_server, make_candidate, tmp_path):
    name = f"pro-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.uri)

    # noise only, and a version registered before per-sample rows existed: both refused, saying why
    v0 = registered(make_candidate, tmp_path, name, noisy(BASE, seed=0))
    rc, out, err = call(["promote", "--version", v0], tmp_path, mlflow_server, name)
    assert rc == 1 and "REFUSED" in out and "gain not significant" in out, err
    old = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.15, tracking=0.1), with_samples=False)
    rc, out, err = call(["promote", "--version", old], tmp_path, mlflow_server, name)
    assert rc == 1 and f"version {old} has no per-sample evaluation" in out, err
    assert "production" not in client.get_registered_model(name).aliases

    # first promotion: a real gain over the base model measured in v1's own evaluation
    v1 = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.15, tracking=0.1))
    rc, out, err = call(["promote", "--version", v1, "--by", "alice"], tmp_path, mlflow_server, name)
    assert rc == 0, err
    assert client.get_model_version_by_alias(name, "production").version == v1
    tags = client.get_model_version(name, v1).tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.by"] == "alice"
    assert tags["promotion.reference"] == "base model" and tags["previous_production"] == "none"
    tg = next(c for c in checks_of(client.get_model_version(name, v1)) if c["metric"] == "tg.mIoU")
    assert (tg["reference"], tg["paired"], tg["n"], tg["level"], tg["ok"]) == ("base model", True, 48, 0.95, True)
    assert tg["delta"] == pytest.approx(0.15) and tg["lo"] > 0 and json.loads(tags["intervals"])["tg.mIoU"]

    # a better one replaces it: judged against the base and against v1 (same inputs: paired)
    v2 = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.25, tracking=0.2))
    assert call(["promote", "--version", v2], tmp_path, mlflow_server, name)[0] == 0
    refs = {(c["reference"], c["paired"]) for c in checks_of(client.get_model_version(name, v2))}
    assert refs == {("base model", True), (f"version {v1}", True)}

    # better still on perception, but QA dropped beyond the margin: refused and recorded
    worse_qa = shifted(BASE, tg=0.35, tracking=0.3)
    worse_qa["qa"] = [0.0 if i in [j for j, v in enumerate(BASE["qa"]) if v][:10] else v
                      for i, v in enumerate(BASE["qa"])]
    v3 = registered(make_candidate, tmp_path, name, worse_qa)
    rc, out, err = call(["promote", "--version", v3], tmp_path, mlflow_server, name)
    assert rc == 1 and "REFUSED" in out
    assert client.get_model_version_by_alias(name, "production").version == v2
    t3 = client.get_model_version(name, v3).tags
    assert t3["promotion.decision"] == "refused" and t3["promotion.reference"] == f"version {v2}"
    failed = [c for c in checks_of(client.get_model_version(name, v3)) if not c["ok"]]
    assert {c["metric"] for c in failed} == {"qa.accuracy"} and failed[0]["delta"] == pytest.approx(-10 / 48)
    assert json.loads(t3["promotion.gate"])["keep"] == GATE["keep"]

    # evaluated on other inputs than production: the comparison with v2 is unpaired, and says so
    v4 = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.35, tracking=0.3), inputs="other-inputs")
    call(["promote", "--version", v4], tmp_path, mlflow_server, name)
    vs_v2 = [c for c in checks_of(client.get_model_version(name, v4)) if c["reference"] == f"version {v2}"]
    assert vs_v2 and all(c["paired"] is False and c["n_reference"] == 48 for c in vs_v2)

    # rollback restores v1 and records both sides; a second rollback has nothing before v1
    rc, out, err = call(["rollback", "--by", "bob"], tmp_path, mlflow_server, name)
    assert rc == 0, err
    assert client.get_model_version_by_alias(name, "production").version == v1
    assert decisions(client.get_model_version(name, v2))[-1]["decision"] == "rolled_back"
    restored = decisions(client.get_model_version(name, v1))
    assert [d["decision"] for d in restored] == ["promoted", "restored"] and restored[-1]["by"] == "bob"
    rc, out, err = call(["rollback"], tmp_path, mlflow_server, name)
    assert rc == 2 and "no previous one" in err
    assert client.get_model_version_by_alias(name, "production").version == v1


def test_two_concurrent_promotions_leave_one_production(mlflow_server, make_candidate, tmp_path):
    """Two candidates that both beat the base but not each other, promoted at the same moment from two
    processes: the first to hold the lock is promoted against the base; the second is judged against it and
    refused (identical answers: the interval is [0, 0]). Without the lock both would be judged against the base
    only and both would say 'promoted'."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.uri)
    same = shifted(BASE, tg=0.15, tracking=0.1)
    va = registered(make_candidate, tmp_path, name, same)
    vb = registered(make_candidate, tmp_path, name, same)
    procs = {v: videorft(["promote", "--version", v, "--by", f"proc-{v}"], tmp_path, mlflow_server, name)
             for v in (va, vb)}
    results = {v: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for v, p in procs.items()}
    assert sorted(r[0] for r in results.values()) == [0, 1], results

    winner = client.get_model_version_by_alias(name, "production").version
    loser = vb if winner == va else va
    assert results[winner][0] == 0 and results[loser][0] == 1
    tw, tl = client.get_model_version(name, winner).tags, client.get_model_version(name, loser).tags
    assert tw["promotion.decision"] == "promoted" and tw["promotion.reference"] == "base model"
    assert tl["promotion.decision"] == "refused" and tl["promotion.reference"] == f"version {winner}"
    holders = [v for v in (va, vb) if "production" in client.get_model_version(name, v).aliases]
    assert holders == [winner] and client.get_registered_model(name).aliases["production"] == winner
    assert not client.search_registered_models(f"name = '{name}.promotion-lock'")  # released


def test_lock_held_stale_and_unknown_version(mlflow_server, make_candidate, tmp_path):
    """A promotion waits for a live lock (and gives up naming its holder), breaks a lock left by a dead
    promoter, and releases it; an unknown version is an error, not a decision."""
    name = f"lock-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.uri)
    v = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.15, tracking=0.1))
    p = PromoteParams(lock_timeout_s=1.0, lock_stale_s=60.0, **GATE)
    lock = f"{name}.promotion-lock"
    client.create_registered_model(lock, tags={"holder": "someone@elsewhere/1/x", "since": str(time.time())})
    with pytest.raises(TimeoutError, match="someone@elsewhere"):
        promote(client, name, p, v, by="t")
    assert client.get_model_version(name, v).tags.get("promotion.decision") is None  # nothing was decided

    client.set_registered_model_tag(lock, "since", str(time.time() - 3600))  # its holder died an hour ago
    assert promote(client, name, p, v, by="t")["decision"] == "promoted"
    assert not client.search_registered_models(f"name = '{lock}'")
    with pytest.raises(LookupError, match="no version 99"):
        promote(client, name, p, "99", by="t")


def test_a_promoter_killed_while_holding_the_lock_does_not_block_the_next(mlflow_server, make_candidate, tmp_path):
    """SIGKILL a process that holds the lock: the next promotion on this host sees its pid gone and breaks the
    lock at once (not after lock_stale_s), naming the reason."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.uri)
    v = registered(make_candidate, tmp_path, name, shifted(BASE, tg=0.15, tracking=0.1))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mlflow import MlflowClient; from stages.promote import RegistryLock\n"
        f"with RegistryLock(MlflowClient({mlflow_server.uri!r}), {name!r}, 5, 600, 'victim'):\n"
        "    print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
    assert client.search_registered_models(f"name = '{name}.promotion-lock'")  # left behind
    t0 = time.monotonic()
    p = PromoteParams(lock_timeout_s=30.0, lock_stale_s=600.0, **GATE)
    assert promote(client, name, p, v, by="t")["decision"] == "promoted"
    assert time.monotonic() - t0 < 30  # broken because the pid is gone, not waited out


def test_a_live_holder_keeps_its_lock_past_lock_stale_s_by_its_heartbeat(mlflow_server):
    """A holder busy for longer than lock_stale_s is not taken for dead: its heartbeat keeps the lock fresh."""
    import threading

    from stages.promote import RegistryLock

    client = MlflowClient(mlflow_server.uri)
    name = f"beat-{uuid.uuid4().hex[:8]}"
    held, release = threading.Event(), threading.Event()

    def hold():
        with RegistryLock(client, name, 5, 2.0, "busy"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(TimeoutError, match="busy"):  # waited 4.5 s > lock_stale_s 2 s: still held
            with RegistryLock(client, name, 4.5, 2.0, "waiter"):
                pass
    finally:
        release.set()
        t.join()
    with RegistryLock(client, name, 5, 2.0, "after"):  # released normally
        pass
    assert not client.search_registered_models(f"name = '{name}.promotion-lock'")
