"""stages/reward_probe.py (evaluate.reward_probe, bench/reward_probe.py), its pure parts: which prompts are
probed, the paired interval over prompts, the verdict."""
import pytest

from stages.reward_probe import paired, probe_rows, verdict


def test_probe_rows_are_distinct_seeded_and_of_the_task():
    rows = [{"id": f"tg{i}", "task": "tg"} for i in range(10)] * 2 + [{"id": "q", "task": "qa"}]
    got = probe_rows(rows, "tg", 6, seed=0)
    assert len(got) == 6 and len({r["id"] for r in got}) == 6 and all(r["task"] == "tg" for r in got)
    assert got == probe_rows(list(reversed(rows)), "tg", 6, seed=0)  # the order of the file does not matter
    assert [r["id"] for r in got] != [r["id"] for r in probe_rows(rows, "tg", 6, seed=1)]
    assert len(probe_rows(rows, "tg", 50, seed=0)) == 10  # fewer prompts than asked: all of them


def test_paired_difference_and_interval_by_hand():
    base = [{"reward": r} for r in (1.0, 1.5, 0.5, 1.2)]
    model = [{"reward": r} for r in (1.1, 1.6, 0.6, 1.3)]  # every prompt +0.1: no spread, a point interval
    got = paired(model, base, level=0.95, resamples=500, seed=0)
    assert got["delta"] == pytest.approx(0.1) and got["lo"] == pytest.approx(0.1) and got["hi"] == pytest.approx(0.1)
    model = [{"reward": r} for r in (1.5, 1.5, 0.5, 1.2)]  # one prompt +0.5, the rest 0
    got = paired(model, base, level=0.95, resamples=4000, seed=0)
    # hand: the mean of 4 draws of {0.5, 0, 0, 0}; its 2.5% quantile is 0 (no 0.5 drawn: p = 0.75^4 = 0.32)
    assert got["delta"] == pytest.approx(0.125) and got["lo"] == pytest.approx(0.0)
    # its 97.5% quantile is 3 of 4 draws: P(at most 2) = 0.949, P(at most 3) = 0.996
    assert got["hi"] == pytest.approx(0.375)


def test_paired_refuses_unpaired_lists():
    with pytest.raises(ValueError):
        paired([{"reward": 1.0}], [{"reward": 1.0}, {"reward": 2.0}], level=0.95, resamples=10, seed=0)


def test_verdict_reads_the_interval():
    assert verdict({"lo": 0.01, "hi": 0.1}) == "rose"
    assert verdict({"lo": -0.1, "hi": -0.01}) == "FELL"
    assert verdict({"lo": -0.01, "hi": 0.1}) == "no significant change"
