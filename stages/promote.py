"""Gated promotion through MLflow aliases: `videorft promote` moves `production` to a version only if the gate
holds; `videorft rollback` moves it back to the version that was production before. Every decision is written on
the version as tags, with the numbers behind it.

The gate decides on bootstrap intervals of candidate - reference (stages/bootstrap.py), computed from the
per-sample metric rows each registered version ships (`eval_samples.json`, written by evaluate): an `improve`
metric passes when the interval's lower bound is above its threshold, a `keep` metric when a drop larger than its
tolerance is excluded. The candidate is judged against the base model of its own evaluation (paired: the same
samples) and, when a version holds `production`, against that version too (paired on the sample ids when both
evaluations saw the same inputs, else unpaired); both must hold. A candidate identical to its reference has the
interval [0, 0] and is refused: no gain is no improvement.

Race safety: an alias is single-valued, so the registry can never hold two production versions; what must not
happen is two promoters both judging against the same old production and the loser's decision saying
"promoted". Promote and rollback therefore run under a registry-wide lock (a registered model named
`<model>.promotion-lock`, whose creation the tracking server's database makes atomic), re-read the
production alias inside it, and read it back after moving it.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from stages import bootstrap
from stages import tasks as task_registry
from stages.evaluate import EVAL_SAMPLES  # register ships it in the model, tagged eval_samples_sha256
from stages.lineage import pid_alive
from stages.params import PromoteParams

NO_PRODUCTION = "none"
BASE = "base model"


# ---------------------------------------------------------------- the gate (pure)


@dataclass
class Comparison:
    """The candidate's per-sample metric rows against a reference's: {task: {sample id: row}} each."""

    reference: str  # "base model" or "version N"
    candidate: dict[str, dict[str, dict]]
    rows: dict[str, dict[str, dict]] | None  # None: the reference has no per-sample rows (see `missing`)
    paired: bool
    missing: str = ""


def model_rows(table: dict, who: str) -> dict[str, dict[str, dict]]:
    """One model's rows ('candidate' or 'baseline') of an eval_samples table: {task: {sample id: row}}."""
    return {task: {i: r[who] for i, r in by_id.items()} for task, by_id in (table.get("tasks") or {}).items()}


@dataclass
class Evaluation:
    """A version's eval_samples table, or why it has none."""

    label: str  # "version N"
    table: dict | None
    why: str = ""


def comparisons(candidate: Evaluation, production: Evaluation | None = None) -> list[Comparison]:
    """Against the base model (always, paired), then against the production version when there is one: paired
    when both evaluations saw the same inputs, else unpaired; refused when they were scored under different
    protocols (docs/tasks.md)."""
    refs = [BASE] + ([production.label] if production else [])
    if candidate.table is None:
        return [Comparison(r, {}, None, paired=False, missing=candidate.why) for r in refs]
    cand = model_rows(candidate.table, "candidate")
    out = [Comparison(BASE, cand, model_rows(candidate.table, "baseline"), paired=True)]
    if production is not None:
        ref = production.table
        if ref is None:
            out.append(Comparison(production.label, cand, None, paired=False, missing=production.why))
        elif protocol(ref) != protocol(candidate.table):  # the same metric names, other readings: not comparable
            out.append(Comparison(production.label, cand, None, paired=False, missing=(
                f"{production.label} was scored under the {protocol(ref)!r} protocol, the candidate under "
                f"{protocol(candidate.table)!r} (evaluate.protocol): re-evaluate one of them")))
        else:
            inputs = ref.get("inputs_sha256")
            same = inputs is not None and inputs == candidate.table.get("inputs_sha256")
            out.append(Comparison(production.label, cand, model_rows(ref, "candidate"), paired=same))
    return out


def protocol(table: dict) -> str:
    """Scoring protocol of an eval_samples table (tables written before protocols existed were scored 'ours')."""
    return table.get("protocol", "ours")


def _intervals(c: Comparison, task: str, p: PromoteParams) -> tuple[dict, dict, dict] | str:
    """(candidate metrics, reference metrics, intervals) of one task, or why there are none."""
    cand, ref = c.candidate.get(task), (c.rows or {}).get(task)
    if not cand or not ref:
        return f"no {task} samples in the {'candidate' if not cand else 'reference'}'s evaluation"
    knobs = {"level": p.interval_level, "resamples": p.bootstrap_resamples, "seed": p.bootstrap_seed}
    if c.paired:
        ids = [i for i in cand if i in ref]
        if not ids:
            return f"no {task} sample in common with {c.reference}"
        cand_rows, ref_rows = [cand[i] for i in ids], [ref[i] for i in ids]
        ivs = bootstrap.paired_interval(task, cand_rows, ref_rows, **knobs)
    else:
        cand_rows, ref_rows = list(cand.values()), list(ref.values())
        ivs = bootstrap.unpaired_interval(task, cand_rows, ref_rows, **knobs)
    return task_registry.aggregate(task, cand_rows), task_registry.aggregate(task, ref_rows), ivs


def _judge(kind: str, limit: float, iv: dict) -> tuple[bool, str]:
    """improve: lower bound > threshold (strict: [0, 0] is no gain); keep: lower bound >= -tolerance."""
    diff = f"{iv['delta']:+.4f} [{iv['lo']:+.4f}, {iv['hi']:+.4f}] ({iv['level']:.0%}, n={iv['n']})"
    if kind == "improve":
        ok = iv["lo"] > limit
        return ok, f"{diff}: lower bound {'>' if ok else '<='} {limit}" + ("" if ok else ": gain not significant")
    ok = bootstrap.drop_excluded(iv, limit)
    return ok, f"{diff}: lower bound {'>=' if ok else '<'} -{limit}" + ("" if ok else ": a larger drop is possible")


def gate_settings(p: PromoteParams) -> dict:
    return {"improve": p.improve, "keep": p.keep, "interval_level": p.interval_level,
            "bootstrap_resamples": p.bootstrap_resamples, "bootstrap_seed": p.bootstrap_seed}


def gate(comps: list[Comparison], p: PromoteParams) -> dict:
    """{'passed': bool, 'checks': [...]}: for every reference, every `improve` metric's lower bound of candidate -
    reference is strictly above its threshold and every `keep` metric's lower bound is >= -tolerance. A metric
    missing on either side fails its check (nothing is assumed)."""
    if not p.improve and not p.keep:
        raise ValueError("promote gate has no metrics (promote.improve and promote.keep are empty)")
    checks, cache = [], {}
    for c in comps:
        for kind, table in (("improve", p.improve), ("keep", p.keep)):
            for key, limit in table.items():
                task, _, metric = key.partition(".")
                check = {"metric": key, "kind": kind, "limit": limit, "reference": c.reference, "paired": c.paired}
                if c.rows is None:
                    checks.append({**check, "ok": False, "reason": c.missing})
                    continue
                if (c.reference, task) not in cache:
                    cache[c.reference, task] = _intervals(c, task, p)
                got = cache[c.reference, task]
                if isinstance(got, str) or metric not in got[2]:
                    checks.append({**check, "ok": False, "reason": got if isinstance(got, str) else
                                   f"{key} missing on the {'candidate' if metric not in got[0] else 'reference'}"})
                    continue
                cand, ref, ivs = got
                ok, reason = _judge(kind, limit, ivs[metric])
                checks.append({**check, **ivs[metric], "candidate": round(cand[metric], 9),
                               "reference_value": round(ref[metric], 9), "ok": ok, "reason": reason})
    return {"passed": all(c["ok"] for c in checks), "checks": checks}


# ---------------------------------------------------------------- registry operations


def actor() -> str:
    return os.environ.get("VIDEORFT_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def _now() -> str:
    """UTC, microseconds: also the key of the decision's tag (no ':' there, MLflow refuses it in keys)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def evaluation(client, name: str, version) -> Evaluation:
    """The version's eval_samples.json, fetched alone from its model (never the whole checkpoint) and checked
    against the sha256 register tagged; None with the reason when it has none."""
    import mlflow

    label = f"version {version.version}"
    sha = version.tags.get("eval_samples_sha256")
    if not sha:
        return Evaluation(label, None, f"{label} has no per-sample evaluation (no {EVAL_SAMPLES}: registered before "
                                       "the gate used intervals); re-run evaluate and register for it")
    where = client.get_model_version_download_uri(name, version.version)
    with tempfile.TemporaryDirectory(prefix="videorft-promote-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{where.rstrip('/')}/{EVAL_SAMPLES}", dst_path=tmp,
                                                   tracking_uri=client.tracking_uri)
        data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        return Evaluation(label, None, f"{label}: {EVAL_SAMPLES} in its model does not match its tag "
                                       "eval_samples_sha256; re-run register for it")
    return Evaluation(label, json.loads(data))


def _or_none(call, *args):
    """What the registry returns, or None when it answers that the object does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return call(*args)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "not found" in str(e).lower():
            return None
        raise


def _alias_version(client, name: str, alias: str):
    return _or_none(client.get_model_version_by_alias, name, alias)


def _version(client, name: str, version: str):
    return _or_none(client.get_model_version, name, version)


class RegistryLock:
    """Mutual exclusion across processes and machines through the registry itself: creating a registered model
    whose name exists fails atomically on the server. The holder records its host and pid and beats a heartbeat
    tag every stale_s/4 seconds; a waiter breaks the lock at once when the holder's pid is gone on the waiter's own
    host, and otherwise when the last beat is older than `stale_s` (a holder killed on another machine)."""

    def __init__(self, client, name: str, timeout_s: float, stale_s: float, holder: str):
        self.client, self.name = client, f"{name}.promotion-lock"
        self.timeout_s, self.stale_s = timeout_s, stale_s
        self.token = f"{holder}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self):
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                now = str(time.time())
                self.client.create_registered_model(
                    self.name, tags={"holder": self.token, "since": now, "heartbeat": now,
                                     "host": socket.gethostname(), "pid": str(os.getpid())},
                    description="held while videorft promote/rollback moves an alias; delete it if stale")
                return self._start_beating()
            except MlflowException as e:
                # ALREADY_EXISTS: held. DOES_NOT_EXIST: the server lost the insert race, then found the lock
                # already released when it looked it up to say so. Either way: look again.
                if not any(c in str(e.error_code) for c in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")):
                    raise
            holder = self._holder()
            if holder and holder["token"] == self.token:
                return self._start_beating()  # our create succeeded but its answer was lost and the client retried
            why = holder and self._dead(holder)
            if why:
                print(f"promote: breaking the lock {self.name} held by {holder['token']}: {why}")
                self._delete(holder["token"])
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is held by {holder['token'] if holder else '?'}; "
                                   f"another promotion is running (waited {self.timeout_s:.0f} s)")
            time.sleep(0.2)

    def _dead(self, holder: dict) -> str | None:
        """Why the holder is gone, or None while it may be alive."""
        if holder["host"] == socket.gethostname() and holder["pid"] is not None and not pid_alive(holder["pid"]):
            return f"its process {holder['pid']} on this host has exited"
        silent = time.time() - holder["beat"]
        if silent > self.stale_s:
            return f"no heartbeat for {silent:.0f} s (lock_stale_s {self.stale_s:.0f})"
        return None

    def _start_beating(self):
        def beat():
            while not self._stop.wait(max(self.stale_s / 4, 0.05)):
                holder = self._holder()
                if holder is None or holder["token"] != self.token:
                    return  # broken by a waiter who thought us dead: never refresh someone else's lock
                try:
                    self.client.set_registered_model_tag(self.name, "heartbeat", str(time.time()))
                except Exception:  # a lost beat is retried at the next one; the waiter's margin covers it
                    pass

        self._beat = threading.Thread(target=beat, name="promotion-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _holder(self) -> dict | None:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException:
            return None  # released meanwhile
        pid = tags.get("pid")
        return {"token": tags.get("holder", "?"), "host": tags.get("host"),
                "pid": int(pid) if pid and pid.isdigit() else None,
                "beat": max(float(tags.get("since", "0")), float(tags.get("heartbeat", "0")))}

    def _delete(self, token: str) -> None:
        """Delete the lock only while `token` holds it (a waiter breaking a stale lock must not delete the fresh
        lock another waiter has just taken)."""
        from mlflow.exceptions import MlflowException

        holder = self._holder()
        if holder is None or holder["token"] != token:
            return
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException:
            pass  # someone else released or broke it first: the next create decides

    def __exit__(self, *exc):
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._delete(self.token)


def record(client, name: str, version: str, decision: dict) -> None:
    """The decision as tags on the version: flat `promotion.*` for the latest, plus one `decision.<time>` tag
    per decision (JSON), so the history of a version is never overwritten."""
    at = decision["at"]
    client.set_model_version_tag(name, version, f"decision.{at.replace(':', '')}", json.dumps(decision, sort_keys=True))
    flat = {"promotion.decision": decision["decision"], "promotion.at": at, "promotion.by": decision["by"],
            "promotion.reference": decision.get("reference", "")}
    if "checks" in decision:
        flat["promotion.checks"] = json.dumps(decision["checks"], sort_keys=True)
        flat["promotion.gate"] = json.dumps(decision["gate"], sort_keys=True)
    for k, v in flat.items():
        client.set_model_version_tag(name, version, k, str(v))


def _lock(client, name: str, p: PromoteParams, who: str) -> RegistryLock:
    return RegistryLock(client, name, p.lock_timeout_s, p.lock_stale_s, who)


def promote(client, name: str, p: PromoteParams, version: str | None = None, by: str | None = None) -> dict:
    """Judge a version (default: the `from_alias` one) against production and move `to_alias` if it passes."""
    who = by or actor()
    with _lock(client, name, p, who):
        cand = _version(client, name, version) if version else _alias_version(client, name, p.from_alias)
        if cand is None:
            raise LookupError(f"{name}: no version {version}" if version else
                              f"{name}: no version given and no version has alias '{p.from_alias}' (registered into "
                              f"another tracking store? `dvc repro --force --single-item register` registers "
                              f"into this one)")
        current = _alias_version(client, name, p.to_alias)  # re-read inside the lock
        decision = {"version": str(cand.version), "by": who, "at": _now(),
                    "alias": p.to_alias, "previous": str(current.version) if current else NO_PRODUCTION}
        if current is not None and str(current.version) == str(cand.version):
            decision.update(decision="already_production", reference=f"version {current.version}")
            record(client, name, decision["version"], decision)
            return decision
        comps = comparisons(evaluation(client, name, cand), evaluation(client, name, current) if current else None)
        result = gate(comps, p)
        decision.update(reference=comps[-1].reference, references=[c.reference for c in comps],
                        gate=gate_settings(p), checks=result["checks"])
        if result["passed"]:
            client.set_registered_model_alias(name, p.to_alias, cand.version)
            after = _alias_version(client, name, p.to_alias)
            if after is None or str(after.version) != str(cand.version):
                raise RuntimeError(f"{name}: alias '{p.to_alias}' reads back as "
                                   f"{after.version if after else None}, not {cand.version}: lock bypassed?")
            client.set_model_version_tag(name, cand.version, "previous_production", decision["previous"])
            decision["decision"] = "promoted"
        else:
            decision["decision"] = "refused"
        record(client, name, decision["version"], decision)
        return decision


def rollback(client, name: str, p: PromoteParams, by: str | None = None) -> dict:
    """Move `to_alias` back to the version that held it before the current one (walks back on repeat)."""
    who = by or actor()
    with _lock(client, name, p, who):
        current = _alias_version(client, name, p.to_alias)
        if current is None:
            raise LookupError(f"{name}: no version has alias '{p.to_alias}'; nothing to roll back")
        previous = current.tags.get("previous_production", NO_PRODUCTION)
        if previous == NO_PRODUCTION:
            raise LookupError(f"{name}: version {current.version} was the first '{p.to_alias}' version; "
                              f"there is no previous one to restore")
        restored = _version(client, name, previous)
        if restored is None:
            raise LookupError(f"{name}: the previous '{p.to_alias}' version {previous} no longer exists")
        client.set_registered_model_alias(name, p.to_alias, restored.version)
        base = {"by": who, "at": _now(), "alias": p.to_alias, "from": str(current.version),
                "to": str(restored.version)}
        record(client, name, str(current.version),
               {**base, "version": str(current.version), "decision": "rolled_back",
                "reference": f"restored version {restored.version}"})
        decision = {**base, "version": str(restored.version), "decision": "restored",
                    "reference": f"rolled back from version {current.version}"}
        record(client, name, str(restored.version), decision)
        return decision


# ---------------------------------------------------------------- thin entry points (videorft promote / rollback)


def _client(params):
    from mlflow import MlflowClient

    from stages.mlflow_log import require_reachable, setup

    uri = setup(params.mlflow, experiment=False)
    require_reachable(uri)
    return MlflowClient(uri)


def report(decision: dict, name: str, to_alias: str) -> list[str]:
    """The decision as lines for a person: the JSON, one line per check, the verdict (CLI and retrain flow)."""
    verdict = {"promoted": "promoted to", "already_production": "already", "refused": "REFUSED for"}
    lines = [json.dumps(decision, indent=2, sort_keys=True)]
    for c in decision.get("checks", []):
        lines.append(f"promote: {'ok  ' if c['ok'] else 'FAIL'} {c['metric']} vs {c['reference']}"
                     f"{'' if c.get('paired', True) else ' (unpaired)'}: {c['reason']}")
    lines.append(f"promote: {name} version {decision['version']} {verdict[decision['decision']]} '{to_alias}' "
                 f"(references: {', '.join(decision.get('references', [decision['reference']]))})")
    return lines


def main_promote(params, model_name: str | None = None, version: str | None = None, by: str | None = None) -> int:
    """Exit 0 when the version is (now or already) production, 1 when the gate refused it."""
    name = model_name or params.register.model_name
    decision = promote(_client(params), name, params.promote, version, by)
    for line in report(decision, name, params.promote.to_alias):
        print(line)
    return 1 if decision["decision"] == "refused" else 0


def main_rollback(params, model_name: str | None = None, by: str | None = None) -> int:
    name = model_name or params.register.model_name
    decision = rollback(_client(params), name, params.promote, by)
    print(f"rollback: {name} '{params.promote.to_alias}' moved from version {decision['from']} "
          f"back to version {decision['to']}")
    return 0
