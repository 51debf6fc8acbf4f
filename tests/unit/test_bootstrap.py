"""Bootstrap intervals of candidate minus base: a case computed by hand (all 27 resamples of 3 samples), the
seeded interval recomputed with plain numpy, degenerate cases with known answers, and the numpy fast path equal
to running each task's aggregate() on every resample."""
import itertools
import random

import numpy as np
import pytest

from stages import bootstrap
from stages.params import TASK_NAMES
from stages.tasks import aggregate


def tg_rows(ious):
    return [{"iou": v, "parsed": True} for v in ious]


def test_interval_by_hand_over_all_27_resamples_of_3_samples():
    """Per-sample differences 0.6, 0, -0.3 (mean 0.1). The 27 equally likely resamples have mean differences
    -0.3 x1, -0.2 x3, -0.1 x3, 0 x4, 0.1 x6, 0.2 x3, 0.3 x3, 0.4 x3, 0.6 x1 (sorted: positions 0..26).
    Level 0.5 takes the 25% and 75% quantiles at positions 6.5 and 19.5 (linear interpolation):
    (-0.1 + 0) / 2 = -0.05 and (0.2 + 0.3) / 2 = 0.25. Level 0.8: positions 2.6 and 23.4: -0.2 and 0.4."""
    cand, base = tg_rows([0.6, 0.5, 0.0]), tg_rows([0.0, 0.5, 0.3])
    every = np.array(list(itertools.product(range(3), repeat=3)))
    half = bootstrap.deltas_to_intervals("tg", cand, base, every, every, 0.5, paired=True)["mIoU"]
    assert (half["delta"], half["lo"], half["hi"]) == pytest.approx((0.1, -0.05, 0.25), abs=1e-12)
    assert (half["n"], half["resamples"], half["paired"]) == (3, 27, True)
    wide = bootstrap.deltas_to_intervals("tg", cand, base, every, every, 0.8, paired=True)["mIoU"]
    assert (wide["lo"], wide["hi"]) == pytest.approx((-0.2, 0.4), abs=1e-12)


def test_seeded_paired_and_unpaired_intervals_equal_a_plain_numpy_recomputation():
    rng = random.Random(3)
    c, b = [rng.random() for _ in range(7)], [rng.random() for _ in range(7)]
    got = bootstrap.paired_interval("tg", tg_rows(c), tg_rows(b), level=0.9, resamples=500, seed=5)["mIoU"]
    idx = np.random.default_rng(5).integers(0, 7, size=(500, 7))
    diffs = [np.mean(np.array(c)[ix]) - np.mean(np.array(b)[ix]) for ix in idx]
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.percentile(diffs, [5, 95])), abs=1e-9)
    assert got["delta"] == pytest.approx(np.mean(c) - np.mean(b), abs=1e-9)

    r = [rng.random() for _ in range(4)]
    un = bootstrap.unpaired_interval("tg", tg_rows(c), tg_rows(r), level=0.9, resamples=500, seed=5)["mIoU"]
    g = np.random.default_rng(5)
    ic, ir = g.integers(0, 7, size=(500, 7)), g.integers(0, 4, size=(500, 4))
    diffs = [np.mean(np.array(c)[x]) - np.mean(np.array(r)[y]) for x, y in zip(ic, ir)]
    assert (un["lo"], un["hi"]) == pytest.approx(tuple(np.percentile(diffs, [5, 95])), abs=1e-9)
    assert (un["paired"], un["n"], un["n_reference"]) == (False, 7, 4)


def test_identical_rows_give_zero_and_a_constant_shift_gives_itself():
    rng = random.Random(0)
    base = [rng.random() * 0.8 for _ in range(48)]
    same = bootstrap.paired_interval("tg", tg_rows(base), tg_rows(base))
    assert all((m["delta"], m["lo"], m["hi"]) == (0.0, 0.0, 0.0) for m in same.values())
    assert set(same) == set(aggregate("tg", tg_rows(base))) - {"count"}
    shifted = bootstrap.paired_interval("tg", tg_rows([v + 0.1 for v in base]), tg_rows(base))["mIoU"]
    assert (shifted["delta"], shifted["lo"], shifted["hi"]) == (0.1, 0.1, 0.1)
    one = bootstrap.paired_interval("tg", tg_rows([0.7]), tg_rows([0.2]))["mIoU"]  # one sample: no spread
    assert (one["lo"], one["hi"], one["n"]) == (0.5, 0.5, 1)


def random_rows(task: str, n: int, rng: random.Random) -> list[dict]:
    def row():
        if task == "tg":
            return {"iou": rng.choice([0.0, 0.3, 0.5, 0.7, rng.random()]), "parsed": rng.random() < 0.9}
        if task == "gqa":
            return {"correct": float(rng.random() < 0.5), "evidence_iou": rng.choice([0.3, 0.5, rng.random()]),
                    "iop": rng.choice([0.5, rng.random()]), "parsed": rng.random() < 0.8}
        if task == "tracking":  # unequal frame counts: SR pools frames, so it is not a mean over sequences
            ious = [rng.choice([0.5, 0.75, rng.random()]) for _ in range(rng.choice([0, 1, 3, 8]))]
            return {"miou": sum(ious) / max(len(ious), 1), "ious": ious, "parsed": bool(ious)}
        if task == "stvg":
            return {"tiou": rng.choice([0.0, 0.5, rng.random()]), "viou": rng.choice([0.0, 0.3, 0.5, rng.random()]),
                    "parsed": rng.random() < 0.9}
        return {"correct": float(rng.random() < 0.5), "parsed": rng.random() < 0.9}
    return [row() for _ in range(n)]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_fast_path_equals_aggregate_on_every_resample(task):
    rng = random.Random(task)
    rows = random_rows(task, 23, rng)
    idx = np.random.default_rng(1).integers(0, 23, size=(300, 23))
    fast, generic = bootstrap.resampled(task, rows, idx), bootstrap.resampled_generic(task, rows, idx)
    assert list(fast) == list(generic) == [k for k in aggregate(task, rows) if k != "count"]
    for name in generic:
        np.testing.assert_allclose(fast[name], generic[name], rtol=0, atol=1e-12, err_msg=name)


def test_same_seed_same_interval_and_bad_arguments_are_errors():
    rng = random.Random(1)
    c, b = random_rows("gqa", 30, rng), random_rows("gqa", 30, rng)
    first = bootstrap.paired_interval("gqa", c, b, seed=7)
    assert bootstrap.paired_interval("gqa", c, b, seed=7) == first
    assert bootstrap.paired_interval("gqa", c, b, seed=8) != first
    with pytest.raises(ValueError, match="differ in number"):
        bootstrap.paired_interval("gqa", c, b[:-1])
    with pytest.raises(ValueError, match="no samples"):
        bootstrap.paired_interval("gqa", [], [])
    with pytest.raises(ValueError, match="level"):
        bootstrap.paired_interval("gqa", c, b, level=1.0)
