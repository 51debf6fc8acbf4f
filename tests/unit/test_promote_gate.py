"""The promotion gate as a pure function: thresholds, tolerances, missing metrics."""
import pytest

from stages.params import PromoteParams, load_params
from stages.promote import gate, metric_value


def table(tg=0.3, ev=0.3, acc=0.5, ao=0.3, qa=0.6):
    return {"tg": {"mIoU": tg, "count": 4}, "gqa": {"evidence_mIoU": ev, "accuracy": acc},
            "tracking": {"AO": ao}, "qa": {"accuracy": qa}}


P = PromoteParams(improve={"tg.mIoU": 0.02, "gqa.evidence_mIoU": 0.01, "gqa.accuracy": 0.0, "tracking.AO": 0.01},
                  keep={"qa.accuracy": 0.03})


def failing(result):
    return sorted(c["metric"] for c in result["checks"] if not c["ok"])


def test_every_metric_improving_enough_passes():
    res = gate(table(tg=0.33, ev=0.32, acc=0.5, ao=0.31, qa=0.58), table(), P)
    assert res["passed"] and failing(res) == []
    tg = next(c for c in res["checks"] if c["metric"] == "tg.mIoU")
    assert tg["delta"] == 0.03 and tg["kind"] == "improve" and tg["reference"] == 0.3


def test_threshold_is_inclusive_and_exact_despite_float_error():
    # 0.32 - 0.3 is 0.020000000000000018 in floating point, 0.31 - 0.3 is 0.010000000000000009
    assert gate(table(tg=0.32, ev=0.31, ao=0.31), table(), P)["passed"]
    assert failing(gate(table(tg=0.319, ev=0.31, ao=0.31), table(), P)) == ["tg.mIoU"]


def test_one_metric_short_of_its_threshold_refuses():
    res = gate(table(tg=0.5, ev=0.5, acc=0.9, ao=0.305), table(), P)
    assert not res["passed"] and failing(res) == ["tracking.AO"]


def test_general_qa_drop_beyond_tolerance_refuses_even_if_all_else_improves():
    ok = gate(table(tg=0.5, ev=0.5, ao=0.5, qa=0.57), table(), P)
    bad = gate(table(tg=0.5, ev=0.5, ao=0.5, qa=0.56), table(), P)
    assert ok["passed"] and not bad["passed"] and failing(bad) == ["qa.accuracy"]
    qa = next(c for c in bad["checks"] if c["metric"] == "qa.accuracy")
    assert qa["kind"] == "keep" and qa["delta"] == -0.04 and "drop +0.0400 > 0.03" in qa["reason"]


def test_missing_metric_fails_its_check_rather_than_being_assumed():
    cand = table(tg=0.9, ev=0.9, ao=0.9)
    del cand["tracking"]
    res = gate(cand, table(), P)
    assert failing(res) == ["tracking.AO"] and "missing on the candidate" in res["checks"][3]["reason"]
    assert failing(gate(table(tg=0.9, ev=0.9, ao=0.9), {}, P)) == ["gqa.accuracy", "gqa.evidence_mIoU",
                                                                  "qa.accuracy", "tg.mIoU", "tracking.AO"]


def test_empty_gate_is_an_error():
    with pytest.raises(ValueError, match="no metrics"):
        gate(table(), table(), PromoteParams(improve={}, keep={}))


def test_metric_value_reads_task_dot_metric_and_rejects_non_numbers():
    m = {"tg": {"R@0.5": 0.25, "mIoU": "x", "ok": True}}
    assert metric_value(m, "tg.R@0.5") == 0.25
    assert metric_value(m, "tg.mIoU") is None and metric_value(m, "tg.ok") is None and metric_value(m, "gqa.a") is None


def test_params_yaml_gate_covers_every_spatio_temporal_task_and_general_qa():
    p = load_params().promote
    assert {k.split(".")[0] for k in p.improve} == {"tg", "gqa", "tracking"}
    assert set(p.keep) == {"qa.accuracy"} and p.to_alias == "production" and p.from_alias == "staging"
