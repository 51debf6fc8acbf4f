"""The promotion gate as a pure function of per-sample evaluation rows: it decides on bootstrap intervals of
candidate - reference. A candidate identical to the base, or one that differs from it only by noise, is refused;
a real gain passes; against production it pairs when the evaluations saw the same inputs; a QA drop beyond the
margin refuses; missing rows or metrics refuse with a reason."""
import pytest

from stages.params import PromoteParams, load_params
from stages.promote import BASE, Evaluation, comparisons, gate
from tests.eval_tables import base_values, noisy, samples, shifted

P = PromoteParams(improve={"tg.mIoU": 0.0, "tracking.AO": 0.0}, keep={"qa.accuracy": 0.10})
BASE_VALUES = base_values()


def judge(cand_values, prod=None, p=P, base=BASE_VALUES, inputs="inputs-sha"):
    """The gate on a candidate evaluated against BASE_VALUES, optionally against a production evaluation."""
    production = Evaluation("version 1", prod) if prod is not None else None
    return gate(comparisons(Evaluation("version 2", samples(cand_values, base, inputs)), production), p)


def failing(result, reference=None):
    return sorted(c["metric"] for c in result["checks"] if not c["ok"] and reference in (None, c["reference"]))


def check(result, metric, reference=BASE):
    return next(c for c in result["checks"] if c["metric"] == metric and c["reference"] == reference)


def test_a_candidate_identical_to_the_base_is_refused_even_at_threshold_zero():
    res = judge(BASE_VALUES)
    assert not res["passed"] and failing(res) == ["tg.mIoU", "tracking.AO"]
    tg = check(res, "tg.mIoU")
    assert (tg["delta"], tg["lo"], tg["hi"]) == (0.0, 0.0, 0.0) and "gain not significant" in tg["reason"]
    assert check(res, "qa.accuracy")["ok"]  # nothing dropped either


@pytest.mark.parametrize("seed", range(20))
def test_a_candidate_that_differs_from_the_base_only_by_noise_is_refused(seed):
    res = judge(noisy(BASE_VALUES, seed))
    assert not res["passed"]
    assert {"tg.mIoU", "tracking.AO"} & set(failing(res))  # no gain is significant
    for metric in ("tg.mIoU", "tracking.AO"):
        c = check(res, metric)
        assert c["lo"] < c["delta"] < c["hi"] and c["paired"] and c["n"] == 48 and c["level"] == 0.95


def test_a_real_improvement_passes_and_every_check_records_its_interval():
    res = judge(noisy(shifted(BASE_VALUES, tg=0.15, tracking=0.1), seed=1, flips=1))
    assert res["passed"], res["checks"]
    tg = check(res, "tg.mIoU")
    assert tg["lo"] > 0 and tg["delta"] == pytest.approx(0.15, abs=0.03) and tg["reason"].startswith("+0.1")
    assert {"delta", "lo", "hi", "level", "resamples", "n", "paired", "reference", "candidate",
            "reference_value"} <= set(tg)
    assert (tg["reference"], tg["resamples"], tg["paired"]) == (BASE, 2000, True)


def test_threshold_is_strict_on_the_lower_bound():
    cand = shifted(BASE_VALUES, tg=0.05, tracking=0.05)  # no clipping: every sample gains exactly 0.05
    assert (check(judge(cand), "tg.mIoU")["lo"], check(judge(cand), "tg.mIoU")["hi"]) == (0.05, 0.05)
    at = PromoteParams(improve={"tg.mIoU": 0.05}, keep={})
    below = PromoteParams(improve={"tg.mIoU": 0.049}, keep={})
    assert not judge(cand, p=at)["passed"] and judge(cand, p=below)["passed"]


def test_a_qa_drop_beyond_the_margin_refuses_even_if_all_else_improves():
    better = shifted(BASE_VALUES, tg=0.15, tracking=0.1)
    right = [i for i, v in enumerate(BASE_VALUES["qa"]) if v]
    one_less = {**better, "qa": [0.0 if i == right[0] else v for i, v in enumerate(BASE_VALUES["qa"])]}
    assert judge(one_less)["passed"]  # -1/48: a drop of 0.10 is excluded
    ten_less = {**better, "qa": [0.0 if i in right[:10] else v for i, v in enumerate(BASE_VALUES["qa"])]}
    res = judge(ten_less)
    assert not res["passed"] and failing(res) == ["qa.accuracy"]
    qa = check(res, "qa.accuracy")
    assert qa["kind"] == "keep" and qa["delta"] == pytest.approx(-10 / 48) and qa["lo"] < -0.1
    assert "a larger drop is possible" in qa["reason"]


def test_against_production_paired_on_the_same_inputs_and_unpaired_otherwise():
    prod_values = shifted(BASE_VALUES, tg=0.15, tracking=0.1)
    prod = samples(prod_values, BASE_VALUES)
    # better than the base, but only noise away from production: refused by the production comparison alone
    res = judge(noisy(prod_values, seed=3, flips=1), prod)
    assert not res["passed"] and failing(res, BASE) == [] and "tg.mIoU" in failing(res, "version 1")
    assert check(res, "tg.mIoU", "version 1")["paired"] is True
    # clearly better than production: passes against both
    best = shifted(prod_values, tg=0.1, tracking=0.1)
    res = judge(best, prod)
    assert res["passed"] and {c["reference"] for c in res["checks"]} == {BASE, "version 1"}
    # production evaluated on other inputs (here 40 samples per task): unpaired, with both sample counts; the
    # sample-to-sample spread no longer cancels, so the same gain is not significant any more
    other = samples({t: v[:40] for t, v in prod_values.items()}, {t: v[:40] for t, v in BASE_VALUES.items()},
                    inputs="other-inputs")
    res = judge(best, other)
    tg = check(res, "tg.mIoU", "version 1")
    assert tg["paired"] is False and (tg["n"], tg["n_reference"]) == (48, 40) and tg["lo"] < 0 < tg["delta"]
    assert not res["passed"] and failing(res, BASE) == [] and check(res, "tg.mIoU")["paired"] is True


def test_unpaired_interval_is_wider_than_the_paired_one_on_the_same_samples():
    prod_values = shifted(BASE_VALUES, tg=0.15, tracking=0.1)
    best = noisy(shifted(prod_values, tg=0.05), seed=4)
    paired = check(judge(best, samples(prod_values, BASE_VALUES)), "tg.mIoU", "version 1")
    unpaired = check(judge(best, samples(prod_values, BASE_VALUES, inputs="other")), "tg.mIoU", "version 1")
    assert paired["delta"] == unpaired["delta"]
    assert unpaired["hi"] - unpaired["lo"] > 2 * (paired["hi"] - paired["lo"])


def test_missing_rows_or_metrics_refuse_with_a_reason_rather_than_being_assumed():
    cand = shifted(BASE_VALUES, tg=0.2, tracking=0.2)
    no_tracking = {t: v for t, v in cand.items() if t != "tracking"}
    res = judge(no_tracking, base={t: v for t, v in BASE_VALUES.items() if t != "tracking"})
    assert failing(res) == ["tracking.AO"] and "no tracking samples" in check(res, "tracking.AO")["reason"]
    typo = PromoteParams(improve={"tg.mIoU": 0.0, "tg.nope": 0.0}, keep={})
    assert "tg.nope missing" in check(judge(cand, p=typo), "tg.nope")["reason"]
    # a version registered before per-sample rows: a refusal that says why, for the candidate or for production
    old = gate(comparisons(Evaluation("version 2", None, "version 2 has no per-sample evaluation")), P)
    assert not old["passed"] and all(c["reason"] == "version 2 has no per-sample evaluation" for c in old["checks"])
    res = gate(comparisons(Evaluation("version 2", samples(cand, BASE_VALUES)),
                           Evaluation("version 1", None, "version 1 has no per-sample evaluation")), P)
    assert not res["passed"] and failing(res, BASE) == []
    assert check(res, "tg.mIoU", "version 1")["reason"] == "version 1 has no per-sample evaluation"


def test_empty_gate_is_an_error():
    with pytest.raises(ValueError, match="no metrics"):
        judge(BASE_VALUES, p=PromoteParams(improve={}, keep={}))


def test_params_yaml_gate_wants_significant_perception_gains_and_keeps_general_qa():
    p = load_params().promote
    assert p.improve == {"tg.mIoU": 0.0, "tracking.AO": 0.0}
    assert set(p.keep) == {"qa.accuracy", "gqa.evidence_mIoU"} and 0 < p.keep["qa.accuracy"] <= 0.1
    assert (p.interval_level, p.bootstrap_resamples, p.to_alias, p.from_alias) == (0.95, 2000, "production", "staging")


def test_a_production_scored_under_another_protocol_is_not_compared():
    production = samples(BASE_VALUES, BASE_VALUES)
    production["protocol"] = "upstream"  # evaluate.protocol  # the candidate's table has none: scored 'ours'
    res = judge(shifted(BASE_VALUES, tg=0.3, tracking=0.3), production)
    against = [c for c in res["checks"] if c["reference"] == "version 1"]
    assert not res["passed"] and against and all(not c["ok"] for c in against)
    assert "'upstream' protocol" in against[0]["reason"]
