"""Bootstrap confidence intervals of a metric difference (candidate minus reference), per task metric.

Paired (`paired_interval`): both models answered the same held-out samples, so each resample draws sample
indices with replacement once and scores both models on those same samples. The sample-to-sample difficulty,
which both models share, cancels out, and the interval is much narrower than comparing two independent estimates.
Unpaired (`unpaired_interval`): two evaluations on different samples (other inputs); each side is resampled on
its own.

Each resample recomputes every metric the task's own aggregate() reports (all but `count`), so pooled metrics
(tracking SR counts frames, not sequences) are resampled as what they are. The interval is the percentile
interval of the resampled differences at `level` (numpy's default linear interpolation between order
statistics); `delta` is the difference on the full sample. Seeded: the same rows, level, resamples and seed give
the same interval.

Speed: a task module with `terms()` (all of them; stages/tasks/common.ratio_metrics) has its metrics resampled
as sums of per-sample numerators and denominators in numpy, which is what aggregate() computes; any other task
falls back to running aggregate() on every resample (the reference the fast path is tested against).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from stages import tasks as task_registry

ROUND = 9  # decimals kept: 0.3 - 0.2 is not 0.1 in floating point, and the gate compares bounds to thresholds
_CHUNK = 256  # resamples per numpy block: bounds memory at _CHUNK x samples per metric


def _metrics(task: str, rows: Sequence[dict]) -> dict[str, float]:
    return {k: v for k, v in task_registry.aggregate(task, list(rows)).items() if k != "count"}


def _resampled_fast(terms: Callable, rows: Sequence[dict], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per metric, its value on every resample (row of `idx`), from the task's per-sample terms."""
    out: dict[str, list[np.ndarray]] = {}
    for name, (num, den) in terms(list(rows)).items():
        num = np.asarray(num, dtype=float)
        den = None if den is None else np.asarray(den, dtype=float)
        parts = []
        for start in range(0, len(idx), _CHUNK):
            block = idx[start:start + _CHUNK]
            total = num[block].sum(axis=1)
            if den is None:
                parts.append(total / block.shape[1])
            else:
                d = den[block].sum(axis=1)
                parts.append(np.divide(total, d, out=np.zeros_like(total), where=d > 0))
        out[name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def resampled_generic(task: str, rows: Sequence[dict], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per metric, aggregate() on every resample: slow, and the definition the fast path must equal."""
    values = [_metrics(task, [rows[i] for i in ix]) for ix in idx.tolist()]
    names = values[0].keys() if values else _metrics(task, rows).keys()
    return {k: np.array([v[k] for v in values], dtype=float) for k in names}


def resampled(task: str, rows: Sequence[dict], idx: np.ndarray) -> dict[str, np.ndarray]:
    terms = getattr(task_registry.get_task(task), "terms", None)
    return _resampled_fast(terms, rows, idx) if terms else resampled_generic(task, rows, idx)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def deltas_to_intervals(task: str, cand_rows: Sequence[dict], ref_rows: Sequence[dict], cand_idx: np.ndarray,
                        ref_idx: np.ndarray, level: float, *, paired: bool) -> dict[str, dict]:
    """Intervals from explicit resample indices (one row per resample): what the public functions draw."""
    cand, ref = _metrics(task, cand_rows), _metrics(task, ref_rows)
    rc, rr = resampled(task, cand_rows, cand_idx), resampled(task, ref_rows, ref_idx)
    out = {}
    for name in cand:
        if name not in ref:
            continue
        lo, hi = percentile_interval(rc[name] - rr[name], level)
        out[name] = {"delta": round(cand[name] - ref[name], ROUND), "lo": round(lo, ROUND), "hi": round(hi, ROUND),
                     "level": level, "resamples": len(cand_idx), "n": len(cand_rows), "paired": paired}
        if not paired:
            out[name]["n_reference"] = len(ref_rows)
    return out


def drop_excluded(iv: dict, tolerance: float) -> bool:
    """A metric is kept when a drop larger than `tolerance` is excluded at the interval's level: lower bound of
    candidate - reference >= -tolerance. The one rule of evaluate's general-ability check and promote's `keep`."""
    return iv["lo"] >= -tolerance


def paired_interval(task: str, cand_rows: Sequence[dict], base_rows: Sequence[dict], *, level: float = 0.95,
                    resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{metric: {delta, lo, hi, level, resamples, n, paired}} of candidate minus base; rows are the per-sample
    metric dicts of stages.tasks.sample_metrics, aligned: row i of both is the same sample."""
    _check(level, resamples)
    n = len(cand_rows)
    if n != len(base_rows):
        raise ValueError(f"{task}: paired rows differ in number ({n} candidate, {len(base_rows)} base)")
    if n == 0:
        raise ValueError(f"{task}: no samples to resample")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return deltas_to_intervals(task, cand_rows, base_rows, idx, idx, level, paired=True)


def unpaired_interval(task: str, cand_rows: Sequence[dict], ref_rows: Sequence[dict], *, level: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Like paired_interval for two evaluations on different samples: each side resampled on its own."""
    _check(level, resamples)
    if not cand_rows or not ref_rows:
        raise ValueError(f"{task}: no samples to resample")
    rng = np.random.default_rng(seed)
    cand_idx = rng.integers(0, len(cand_rows), size=(resamples, len(cand_rows)))
    ref_idx = rng.integers(0, len(ref_rows), size=(resamples, len(ref_rows)))
    return deltas_to_intervals(task, cand_rows, ref_rows, cand_idx, ref_idx, level, paired=False)


def paired_mean_interval(task: str, cand_runs: Sequence[Sequence[dict]], ref_runs: Sequence[Sequence[dict]], *,
                         level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """paired_interval for the MEAN over several runs per side (seeds): every run answered the same samples, so
    each resample draws one set of sample indices, scores every run on it and compares the two sides' means. The
    interval covers the sampling noise of the held-out set; the spread between seeds is the runs' own business."""
    _check(level, resamples)
    runs = [*cand_runs, *ref_runs]
    if not cand_runs or not ref_runs:
        raise ValueError(f"{task}: no runs to compare")
    n = len(runs[0])
    if n == 0 or any(len(r) != n for r in runs):
        raise ValueError(f"{task}: paired runs differ in number of samples ({[len(r) for r in runs]})")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))

    def mean_of(side: Sequence[Sequence[dict]]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        points = [_metrics(task, r) for r in side]
        draws = [resampled(task, r, idx) for r in side]
        return ({k: float(np.mean([p[k] for p in points])) for k in points[0]},
                {k: np.mean([d[k] for d in draws], axis=0) for k in draws[0]})

    (cand, rc), (ref, rr) = mean_of(cand_runs), mean_of(ref_runs)
    out = {}
    for name in cand:
        if name in ref:
            lo, hi = percentile_interval(rc[name] - rr[name], level)
            out[name] = {"delta": round(cand[name] - ref[name], ROUND), "lo": round(lo, ROUND),
                         "hi": round(hi, ROUND), "level": level, "resamples": resamples, "n": n, "paired": True,
                         "runs": [len(cand_runs), len(ref_runs)]}
    return out
