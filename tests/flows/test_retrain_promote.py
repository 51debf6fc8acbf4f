"""The retrain flow promotes by calling the promote stage's gate (stages.promote.promote) on the workspace's
params, with the flow's tracking URI and actor: no subprocess. The registry is faked here (the services and slow
flow tests run the real one); what is checked is the wiring and how decisions map to the flow's result."""
import logging

import pytest

from flows import retrain
from flows.workspace import StageError
from stages import promote as promote_stage


@pytest.fixture
def ws(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("register: {model_name: m}\n")
    monkeypatch.setattr(retrain, "get_run_logger", lambda: logging.getLogger("test"))
    return tmp_path


def fake_gate(monkeypatch, decision=None, error=None):
    seen = {}

    def gate(client, name, p, version=None, by=None):
        seen.update(uri=client.tracking_uri, name=name, by=by, keep=p.keep)
        if error:
            raise error
        return {"version": "3", "reference": "base model", "checks": [], **decision}

    monkeypatch.setattr(promote_stage, "promote", gate)
    return seen


@pytest.mark.parametrize("decision, promoted", [("promoted", True), ("already_production", True),
                                                ("refused", False)])
def test_a_decision_is_the_flows_result(ws, monkeypatch, decision, promoted):
    seen = fake_gate(monkeypatch, {"decision": decision})
    out = retrain.promote_task.fn(str(ws), "sqlite:////tmp/x.db", "retrain flow run r")
    assert out == {"stage": "promote", "ran": True, "promoted": promoted, "decision": decision, "version": "3"}
    assert seen == {"uri": "sqlite:////tmp/x.db", "name": "m", "by": "retrain flow run r",
                    "keep": {"qa.accuracy": 0.02}}  # the workspace's params (defaults: the general tolerance)


def test_no_version_or_a_missing_params_file_fails_the_task(ws, monkeypatch):
    fake_gate(monkeypatch, error=LookupError("m: no version has alias 'staging'"))
    with pytest.raises(StageError, match="promote failed: LookupError: m: no version has alias"):
        retrain.promote_task.fn(str(ws), "sqlite:////tmp/x.db", "me")
    (ws / "params.yaml").unlink()
    with pytest.raises(StageError, match="params file .* not found"):
        retrain.promote_task.fn(str(ws), "sqlite:////tmp/x.db", "me")
