"""Gated promotion through MLflow aliases: `videorft promote` moves `production` to a version only if the gate
holds; `videorft rollback` moves it back to the version that was production before. Every decision is written on
the version as tags, with the numbers behind it.

The gate (a pure function of two metric tables and PromoteParams) compares the candidate with a reference:
the current production version, or, when nothing is in production yet, the base model as measured in the
candidate's own evaluation (tag `baseline_metrics`), so the first production model must beat what it was
trained from by the same thresholds.

Race safety: an alias is single-valued, so the registry can never hold two production versions; what must not
happen is two promoters both judging against the same old production and the loser's decision saying
"promoted". Promote and rollback therefore run under a registry-wide lock (a registered model named
`<model>.promotion-lock`, whose creation the tracking server's database makes atomic), re-read the
production alias inside it, and read it back after moving it.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone

from stages.params import PromoteParams

NO_PRODUCTION = "none"


# ---------------------------------------------------------------- the gate (pure)


def metric_value(metrics: dict, key: str) -> float | None:
    """'tg.mIoU' -> metrics['tg']['mIoU'] (the task is the part before the first dot)."""
    task, _, name = key.partition(".")
    value = (metrics.get(task) or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def gate(candidate: dict, reference: dict, p: PromoteParams) -> dict:
    """{'passed': bool, 'checks': [...]}: every `improve` metric gains >= its threshold and every `keep` metric
    drops <= its tolerance. A metric missing on either side fails its check (nothing is assumed)."""
    checks = []
    for kind, table in (("improve", p.improve), ("keep", p.keep)):
        for key, limit in table.items():
            cand, ref = metric_value(candidate, key), metric_value(reference, key)
            check = {"metric": key, "kind": kind, "candidate": cand, "reference": ref, "limit": limit}
            if cand is None or ref is None:
                check.update(ok=False, reason=f"{key} missing on the {'candidate' if cand is None else 'reference'}")
            else:
                diff, drop = round(cand - ref, 9), round(ref - cand, 9)  # rounded: 0.3 - 0.2 is not 0.1
                ok = diff >= limit if kind == "improve" else drop <= limit
                rule = f"gain {diff:+.4f} {'>=' if ok else '<'} {limit}" if kind == "improve" else \
                    f"drop {drop:+.4f} {'<=' if ok else '>'} {limit}"
                check.update(delta=diff, ok=ok, reason=rule)
            checks.append(check)
    if not checks:
        raise ValueError("promote gate has no metrics (promote.improve and promote.keep are empty)")
    return {"passed": all(c["ok"] for c in checks), "checks": checks}


# ---------------------------------------------------------------- registry operations


def actor() -> str:
    return os.environ.get("VIDEORFT_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def _now() -> str:
    """UTC, microseconds: also the key of the decision's tag (no ':' there, MLflow refuses it in keys)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _metrics_tag(version, tag: str) -> dict | None:
    raw = version.tags.get(tag)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


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
    whose name exists fails atomically on the server. A lock older than `stale_s` is from a dead holder."""

    def __init__(self, client, name: str, timeout_s: float, stale_s: float, holder: str):
        self.client, self.name = client, f"{name}.promotion-lock"
        self.timeout_s, self.stale_s = timeout_s, stale_s
        self.token = f"{holder}/{os.getpid()}/{uuid.uuid4().hex[:8]}"

    def __enter__(self):
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.client.create_registered_model(
                    self.name, tags={"holder": self.token, "since": str(time.time())},
                    description="held while videorft promote/rollback moves an alias; delete it if stale")
                return self
            except MlflowException as e:
                # ALREADY_EXISTS: held. DOES_NOT_EXIST: the server lost the insert race, then found the lock
                # already released when it looked it up to say so. Either way: look again.
                if not any(c in str(e.error_code) for c in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")):
                    raise
            holder = self._holder()
            if holder and holder[0] == self.token:
                return self  # our create succeeded but its answer was lost and the client retried
            if holder and time.time() - holder[1] > self.stale_s:
                print(f"promote: breaking stale lock {self.name} held by {holder[0]}")
                self._delete(holder[0])
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is held by {holder[0] if holder else '?'}; "
                                   f"another promotion is running (waited {self.timeout_s:.0f} s)")
            time.sleep(0.2)

    def _holder(self) -> tuple[str, float] | None:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags
            return tags.get("holder", "?"), float(tags.get("since", "0"))
        except MlflowException:
            return None  # released meanwhile

    def _delete(self, token: str) -> None:
        """Delete the lock only while `token` holds it (a waiter breaking a stale lock must not delete the fresh
        lock another waiter has just taken)."""
        from mlflow.exceptions import MlflowException

        holder = self._holder()
        if holder is None or holder[0] != token:
            return
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException:
            pass  # someone else released or broke it first: the next create decides

    def __exit__(self, *exc):
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
                              f"{name}: no version given and no version has alias '{p.from_alias}'")
        current = _alias_version(client, name, p.to_alias)  # re-read inside the lock
        decision = {"version": str(cand.version), "by": who, "at": _now(),
                    "alias": p.to_alias, "previous": str(current.version) if current else NO_PRODUCTION}
        if current is not None and str(current.version) == str(cand.version):
            decision.update(decision="already_production", reference=f"version {current.version}")
            record(client, name, decision["version"], decision)
            return decision
        if current is None:
            reference, ref_metrics = "base model", _metrics_tag(cand, "baseline_metrics")
        else:
            reference, ref_metrics = f"version {current.version}", _metrics_tag(current, "metrics")
        result = gate(_metrics_tag(cand, "metrics") or {}, ref_metrics or {}, p)
        decision.update(reference=reference, gate={"improve": p.improve, "keep": p.keep}, checks=result["checks"])
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

    from stages.tracking import require_reachable, setup

    uri = setup(params.mlflow, experiment=False)
    require_reachable(uri)
    return MlflowClient(uri)


def main_promote(params, model_name: str | None = None, version: str | None = None, by: str | None = None) -> int:
    """Exit 0 when the version is (now or already) production, 1 when the gate refused it."""
    name = model_name or params.register.model_name
    decision = promote(_client(params), name, params.promote, version, by)
    print(json.dumps(decision, indent=2, sort_keys=True))
    verdict = {"promoted": "promoted to", "already_production": "already", "refused": "REFUSED for"}
    print(f"promote: {name} version {decision['version']} {verdict[decision['decision']]} "
          f"'{params.promote.to_alias}' (reference: {decision['reference']})")
    return 1 if decision["decision"] == "refused" else 0


def main_rollback(params, model_name: str | None = None, by: str | None = None) -> int:
    name = model_name or params.register.model_name
    decision = rollback(_client(params), name, params.promote, by)
    print(f"rollback: {name} '{params.promote.to_alias}' moved from version {decision['from']} "
          f"back to version {decision['to']}")
    return 0
