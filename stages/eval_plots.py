"""Evaluation plots (PNG, matplotlib without a display): per-task IoU histograms, candidate vs base bars with
the difference's bootstrap interval, and the training run's reward curves. Declared as DVC plots of the evaluate
stage and logged to the MLflow run.

The data behind two of them is also written as DVC plot data (JSON, byte-deterministic, kept in git), which
dvc.yaml's top-level `plots:` draws with DVC's built-in templates, so `dvc plots diff` overlays experiments:
reward_curves.json (reward_rows), candidate_vs_base.json (comparison_rows) and validation_curves.json
(validation_rows: the greedy validation metrics of train.validation, empty when it is off)."""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from stages import tasks as task_registry
from stages.io import atomic_path, write_json

BINS = [i / 10 for i in range(11)]
# DVC plot data files (dvc.yaml top-level plots), next to the PNGs.
REWARD_CURVES = "reward_curves.json"
CANDIDATE_VS_BASE = "candidate_vs_base.json"
VALIDATION_CURVES = "validation_curves.json"
REWARD_PROBE = "training_reward_probe.json"
ALL = "all"  # the reward curve over every task's completions (TRL's `reward`)
DIGITS = 6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(fig)


def iou_values(records: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    fields = task_registry.plot_iou_fields()  # the per-sample overlap each spatio-temporal task is judged by
    for r in records:
        field = fields.get(r["task"])
        if field is not None:
            out.setdefault(r["task"], []).append(float(r["metrics"][field]))
    return out


def iou_histograms(candidate: list[dict], baseline: list[dict], path: str | os.PathLike) -> None:
    plt = _pyplot()
    cand, base = iou_values(candidate), iou_values(baseline)
    fields = task_registry.plot_iou_fields()
    tasks = [t for t in fields if t in cand or t in base] or list(fields)[:1]  # an empty chart when none
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ax.hist([base.get(task, []), cand.get(task, [])], bins=BINS, label=["base", "candidate"])
        ax.set_title(f"{task}: {fields.get(task, 'iou')} per sample")
        ax.set_xlabel("IoU")
        ax.set_ylabel("samples")
        ax.legend()
    _save(fig, path)


def comparison_bars(candidate: dict, baseline: dict, path: str | os.PathLike, intervals: dict | None = None) -> None:
    """Headline metric per task: base and candidate bars, and beside them candidate - base with its bootstrap
    interval as error bars (an interval that crosses 0 is a difference noise alone could make)."""
    plt = _pyplot()
    intervals = intervals or {}
    headline = task_registry.headline()
    tasks = [t for t in headline if t in candidate]
    labels = [f"{t}\n{headline[t]}" for t in tasks]
    xs = list(range(len(tasks)))
    width = 1.8 * max(len(tasks), 2)
    fig, (ax, dax) = plt.subplots(1, 2, figsize=(2 * width, 3))
    ax.bar([x - 0.2 for x in xs], [baseline.get(t, {}).get(headline[t], 0.0) for t in tasks], 0.4, label="base")
    ax.bar([x + 0.2 for x in xs], [candidate[t].get(headline[t], 0.0) for t in tasks], 0.4, label="candidate")
    ax.set_xticks(xs, labels)
    ax.set_ylim(0, 1)
    ax.set_title("candidate vs base")
    ax.legend()
    ivs = [intervals.get(t, {}).get(headline[t]) for t in tasks]
    shown = [(x, iv) for x, iv in zip(xs, ivs) if iv]
    if shown:
        d = [iv["delta"] for _, iv in shown]
        err = [[iv["delta"] - iv["lo"] for _, iv in shown], [iv["hi"] - iv["delta"] for _, iv in shown]]
        colors = ["tab:green" if iv["lo"] > 0 else "tab:red" if iv["hi"] < 0 else "tab:gray" for _, iv in shown]
        dax.bar([x for x, _ in shown], d, 0.5, yerr=err, capsize=4, color=colors)
        dax.set_title(f"candidate - base, {shown[0][1]['level']:.0%} bootstrap interval")
    else:
        dax.text(0.5, 0.5, "no intervals", ha="center", va="center", transform=dax.transAxes)
        dax.set_title("candidate - base")
    dax.axhline(0, color="black", linewidth=0.8)
    dax.set_xticks(xs, labels)
    _save(fig, path)


def reward_history(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Total reward and per-task reward parts (rewards/<task>_<part>/mean) logged by the train stage."""
    run = client.get_run(run_id)
    names = [m for m in run.data.metrics if m == "reward" or (m.startswith("rewards/") and m.endswith("/mean"))]
    return {n: [(h.step, h.value) for h in sorted(client.get_metric_history(run_id, n), key=lambda h: h.step)]
            for n in sorted(names)}


def reward_curves(history: dict[str, list[tuple[int, float]]], path: str | os.PathLike) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, points in history.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                    label=name.removeprefix("rewards/").removesuffix("/mean"),
                    linewidth=2.5 if name == "reward" else 1)
    if not history:
        ax.text(0.5, 0.5, "no training reward history found", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("training reward curves")
    if history:
        ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def _round(v) -> float | None:
    return None if v is None else round(float(v), DIGITS)


def reward_rows(history: dict[str, list[tuple[int, float]]], tasks: list[str]) -> list[dict]:
    """Reward curves as DVC plot data, one row per logged step: `step`, `all` (TRL's `reward`, every task's
    completions) and per task its reward, the sum of its parts' means (rewards/<task>_<part>/mean: the mean total
    reward of that task's completions). Every row has every task of `tasks` (null where the task had no
    completion in that logging window or was not trained), so one dvc.yaml definition draws any run."""
    series: dict[str, dict[int, float]] = {ALL: dict(history.get("reward", []))}
    for task in tasks:
        head = f"rewards/{task}_"
        parts = [dict(points) for name, points in history.items() if name.startswith(head) and name.endswith("/mean")]
        steps = set().union(*parts) if parts else set()
        series[task] = {s: sum(p[s] for p in parts) for s in steps if all(s in p for p in parts)}
    steps = sorted(set().union(*series.values()))
    return [{"step": int(s), **{name: _round(v.get(s)) for name, v in series.items()}} for s in steps]


def reward_trend(rows: list[dict], tasks: list[str], level: float = 0.95) -> dict[str, dict]:
    """Did each task's training reward rise? From reward_rows: the mean of the task's logged points in the second
    half of the steps minus the mean in the first half, with a normal-approximation interval at `level` from the
    points' spread (Welch: the halves' variances apart). Each point is one logging window's mean over different
    prompts, so the spread is mostly prompt difficulty. `all` first; a task with fewer than 2 points in a half is
    left out."""
    if not rows:
        return {}
    middle = max(r["step"] for r in rows) / 2
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    out = {}
    for task in [ALL, *tasks]:
        points = [(r["step"], r[task]) for r in rows if r.get(task) is not None]
        first = [v for step, v in points if step <= middle]
        second = [v for step, v in points if step > middle]
        if len(first) < 2 or len(second) < 2:
            continue
        d = statistics.fmean(second) - statistics.fmean(first)
        se = math.sqrt(statistics.variance(first) / len(first) + statistics.variance(second) / len(second))
        out[task] = {"first_half": _round(statistics.fmean(first)), "second_half": _round(statistics.fmean(second)),
                     "delta": _round(d), "lo": _round(d - z * se), "hi": _round(d + z * se),
                     "points": [len(first), len(second)], "level": level}
    return out


def validation_rows(validation: dict | None, tasks: list[str]) -> list[dict]:
    """train.validation's history (train_summary.json "validation") as DVC plot data: one row per validated step
    with each task's greedy headline metric (null for a task not validated) and `selected` (1 on the step that
    became the model, else 0). No validation: no rows."""
    if not validation:
        return []
    headline = task_registry.headline()
    pick = validation.get("selected_step")
    return [{"step": int(h["step"]),
             **{t: _round(h["metrics"].get(t, {}).get(headline[t])) for t in tasks},
             "selected": int(h["step"] == pick)} for h in validation["history"]]


def comparison_rows(candidate: dict, baseline: dict, intervals: dict | None = None) -> list[dict]:
    """Headline metric per task as DVC plot data: a row per (task, model) with `task`, `metric`, `model`
    (base | candidate), `label` (what the chart's axis shows), `value`, and `lo`/`hi`: for the candidate, the base
    plus the paired bootstrap interval of candidate - base (a base outside [lo, hi] is a change beyond noise);
    null for the base (the interval is of the difference) and where the evaluation has no interval."""
    intervals = intervals or {}
    rows, headline = [], task_registry.headline()
    for task in [t for t in headline if t in candidate]:
        metric = headline[task]
        base = baseline.get(task, {}).get(metric)
        iv = intervals.get(task, {}).get(metric)
        ends = (base + iv["lo"], base + iv["hi"]) if iv and base is not None else (None, None)
        for model, value, (lo, hi) in (("base", base, (None, None)), ("candidate", candidate[task].get(metric), ends)):
            rows.append({"task": task, "metric": metric, "model": model, "label": f"{task} {metric} {model}",
                         "value": _round(value), "lo": _round(lo), "hi": _round(hi)})
    return rows


def probe_rows(probe: dict | None) -> list[dict]:
    """evaluate.reward_probe as DVC plot data: per task a row per model (base | candidate) with `label`, `value`
    (mean training reward on the probed prompts) and, as in comparison_rows, `lo`/`hi` on the candidate's row: the
    base plus the paired interval of candidate - base (null on the base's); `verdict` likewise. Every row has the
    same keys (DVC drops a plot whose rows differ). Off: no rows."""
    rows = []
    for task, t in (probe or {}).items():
        base = t["baseline"]["reward"]
        for model, value, lo, hi, verdict in (("base", base, None, None, None),
                                              ("candidate", t["candidate"]["reward"], base + t["lo"], base + t["hi"],
                                               t["verdict"])):
            rows.append({"task": task, "model": model, "label": f"{task} {model}", "value": _round(value),
                         "lo": _round(lo), "hi": _round(hi), "verdict": verdict})
    return rows


def write_data(out_dir: str | os.PathLike, cand_metrics: dict, base_metrics: dict, history: dict,
               intervals: dict | None, tasks: list[str], validation: dict | None = None,
               probe: dict | None = None) -> list[Path]:
    """The DVC plot data files (reward_rows, comparison_rows, validation_rows, probe_rows) in out_dir."""
    out = Path(out_dir)
    paths = [out / REWARD_CURVES, out / CANDIDATE_VS_BASE, out / VALIDATION_CURVES, out / REWARD_PROBE]
    write_json(paths[0], reward_rows(history, tasks))
    write_json(paths[1], comparison_rows(cand_metrics, base_metrics, intervals))
    write_json(paths[2], validation_rows(validation, tasks))
    write_json(paths[3], probe_rows(probe))
    return paths


def write_all(out_dir: str | os.PathLike, cand_records: list[dict], base_records: list[dict],
              cand_metrics: dict, base_metrics: dict, history: dict, intervals: dict | None = None) -> list[Path]:
    out = Path(out_dir)
    paths = [out / "iou_hist.png", out / "candidate_vs_baseline.png", out / "reward_curves.png"]
    iou_histograms(cand_records, base_records, paths[0])
    comparison_bars(cand_metrics, base_metrics, paths[1], intervals)
    reward_curves(history, paths[2])
    return paths
