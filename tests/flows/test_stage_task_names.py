"""What the Prefect UI lists under a retrain run: one task run per stage, named after the stage (not `stage-<n>`)."""
import pytest

from flows import retrain
from flows.workspace import StageOutcome

pytestmark = pytest.mark.slow  # starts a Prefect server (prefect_test_harness)


def test_stage_task_runs_are_named_after_their_stage(monkeypatch):
    from prefect import flow, get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setattr(retrain.wsp, "run_stage",  # the naming is under test, not DVC
                        lambda ws, stage, **kw: StageOutcome(stage=stage, ran=True, seconds=0.0))

    @flow
    def two_stages():
        return [retrain.stage_task(".", stage, {}, False) for stage in ("ingest", "train")]

    with prefect_test_harness(server_startup_timeout=120):
        state = two_stages(return_state=True)
        assert state.is_completed(), state
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert sorted(run.name for run in runs) == ["ingest", "train"]
