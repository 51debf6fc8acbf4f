"""GRPO against SFT on the same samples (the micro-reproduction's two arms): table, plot and one MLflow run.

Both arms start from the same model, train on the same nested subsets with the same seeds and answer the same
held-out samples, so every comparison is paired over those samples (stages/bootstrap.paired_mean_interval: the
mean over seeds of one arm minus the other's). Intervals cover the held-out sampling noise; "± sd" is the spread
over seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages import tasks as task_registry
from stages.bootstrap import paired_mean_interval
from stages.io import read_jsonl, write_json, write_text
from stages.params import Params

COLUMNS = [("tg", "mIoU"), ("gqa", "evidence_mIoU"), ("gqa", "accuracy"), ("tracking", "AO"), ("qa", "accuracy")]
PRED_DIR = {"grpo": "predictions", "sft": "sft-predictions"}


def _records(out: Path, arm: str, n: int, seed) -> list[dict]:
    name = "start.jsonl" if n == 0 else f"seed-{seed}.jsonl"
    for a in ((arm, "grpo", "sft") if n == 0 else (arm,)):  # the start model: whichever arm evaluated it
        path = out / f"{PRED_DIR[a]}-{n}" / name
        if path.exists():
            return read_jsonl(path)
    raise FileNotFoundError(f"no predictions of {arm} n={n} seed={seed} under {out}")


def per_task(records: list[dict]) -> dict[str, list[dict]]:
    """Per-sample metric dicts by task, ordered by sample id (every run's order is then the same)."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for r in records:
        out.setdefault(r["task"], []).append((r["id"], r["metrics"]))
    return {t: [m for _, m in sorted(v, key=lambda x: x[0])] for t, v in out.items()}


def _ids(records: list[dict]) -> list[str]:
    return sorted(r["id"] for r in records)


def arm_runs(out: Path, arm: str, row: dict) -> list[list[dict]]:
    return [_records(out, arm, row["n"], run.get("seed")) for run in row["runs"]]


def compare_rows(grpo: dict, sft: dict, out: Path, level: float = 0.95, resamples: int = 2000) -> list[dict]:
    """One entry per size both arms have: per (task, metric) each arm's mean and sd, each arm minus the start
    model and SFT minus GRPO, with paired intervals."""
    g_rows, s_rows = {r["n"]: r for r in grpo["sizes"]}, {r["n"]: r for r in sft["sizes"]}
    base_records = _records(out, "grpo", 0, None)
    base = per_task(base_records)
    rows = []
    for n in sorted(set(g_rows) & set(s_rows) - {0}):
        runs = {"grpo": arm_runs(out, "grpo", g_rows[n]), "sft": arm_runs(out, "sft", s_rows[n])}
        for arm, recs in runs.items():
            for r in recs:
                if _ids(r) != _ids(base_records):
                    raise ValueError(f"{arm} n={n}: its held-out samples are not the start model's")
        by_task = {arm: [per_task(r) for r in recs] for arm, recs in runs.items()}
        entry = {"n": n, "metrics": {}}
        for task, metric in COLUMNS:
            if task not in base:
                continue
            g_runs = [r[task] for r in by_task["grpo"]]
            s_runs = [r[task] for r in by_task["sft"]]
            kw = {"level": level, "resamples": resamples, "seed": n}
            cell = {
                "base": _value(task, base[task], metric),
                "grpo": {"mean": g_rows[n]["metrics"][task][metric], "sd": g_rows[n]["sd"][task][metric],
                         "vs_base": paired_mean_interval(task, g_runs, [base[task]], **kw)[metric]},
                "sft": {"mean": s_rows[n]["metrics"][task][metric], "sd": s_rows[n]["sd"][task][metric],
                        "vs_base": paired_mean_interval(task, s_runs, [base[task]], **kw)[metric]},
                "sft_minus_grpo": paired_mean_interval(task, s_runs, g_runs, **kw)[metric],
            }
            entry["metrics"][f"{task}.{metric}"] = cell
        entry["train_cpu_min"] = {"grpo": round(g_rows[n]["train_cpu_s"] / 60, 1),
                                  "sft": round(s_rows[n]["train_cpu_s"] / 60, 1),
                                  "sft_selection": round(s_rows[n].get("selection", {}).get("cpu_s", 0) / 60, 1)}
        entry["sft_chosen"] = {k: s_rows[n].get("selection", {}).get(k) for k in ("lr", "epochs")}
        rows.append(entry)
    return rows


def _value(task: str, rows: list[dict], metric: str) -> float:
    return float(task_registry.aggregate(task, rows)[metric])


def verdict(cell: dict) -> str:
    d = cell["sft_minus_grpo"]
    if d["lo"] > 0:
        return "SFT better"
    if d["hi"] < 0:
        return "GRPO better"
    return "no significant difference"


def table(rows: list[dict]) -> str:
    def iv(d: dict) -> str:
        return f"{d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"

    lines = ["| samples per task | metric | start model | GRPO (mean ± sd) | SFT (mean ± sd) | GRPO - start | "
             "SFT - start | SFT - GRPO | reading |", "|---:|---|---:|---:|---:|---|---|---|---|"]
    for e in rows:
        for key, c in e["metrics"].items():
            lines.append(f"| {e['n']} | {key} | {c['base']:.3f} | {c['grpo']['mean']:.3f} ± {c['grpo']['sd']:.3f} | "
                         f"{c['sft']['mean']:.3f} ± {c['sft']['sd']:.3f} | {iv(c['grpo']['vs_base'])} | "
                         f"{iv(c['sft']['vs_base'])} | {iv(c['sft_minus_grpo'])} | {verdict(c)} |")
    lines += ["", "| samples per task | GRPO train CPU min | SFT train CPU min | SFT choice (lr, epochs) | "
              "SFT selection CPU min |", "|---:|---:|---:|---|---:|"]
    for e in rows:
        t = e["train_cpu_min"]
        lines.append(f"| {e['n']} | {t['grpo']} | {t['sft']} | {e['sft_chosen']['lr']:g}, {e['sft_chosen']['epochs']} "
                     f"| {t['sft_selection']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], grpo: dict, path: Path) -> None:
    from stages.eval_plots import _pyplot, _save

    plt = _pyplot()
    keys = [f"{t}.{m}" for t, m in task_registry.headline().items()
            if rows and f"{t}.{m}" in rows[0]["metrics"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    xs = [0] + [e["n"] for e in rows]
    for ax, key in zip(axes[0], keys, strict=True):
        base = rows[0]["metrics"][key]["base"]
        for arm, colour in (("grpo", "tab:blue"), ("sft", "tab:orange")):
            cells = [e["metrics"][key][arm] for e in rows]
            ax.plot(xs, [base] + [c["mean"] for c in cells], "o-", color=colour, label=f"{arm.upper()}, mean of seeds")
            ax.fill_between(xs, [base] + [base + c["vs_base"]["lo"] for c in cells],
                            [base] + [base + c["vs_base"]["hi"] for c in cells], color=colour, alpha=0.2,
                            label=f"{arm.upper()} 95% paired interval")
        task, metric = key.split(".")
        blind = grpo["blind_best"].get(task, {}).get(metric)
        if blind is not None:
            ax.axhline(blind, color="black", linestyle=":", label="best blind answer")
        ax.set_title(key)
        ax.set_xlabel("training samples per task (0 = start model)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def log_mlflow(params: Params, rows: list[dict], files: list[Path]) -> str:
    import mlflow

    from stages.mlflow_log import finite_metrics, setup

    setup(params.mlflow)
    with mlflow.start_run(run_name="micro-repro-grpo-vs-sft") as run:
        mlflow.set_tags({"recipe": "micro-repro", "stage": "micro_repro", "arm": "grpo-vs-sft"})
        for e in rows:
            flat = {}
            for key, c in e["metrics"].items():
                t, m = key.split(".")
                for arm in ("grpo", "sft"):
                    flat[f"{arm}/{t}/{m}"] = c[arm]["mean"]
                d = c["sft_minus_grpo"]
                flat.update({f"sft_minus_grpo/{t}/{m}": d["delta"], f"sft_minus_grpo/{t}/{m}_lo": d["lo"],
                             f"sft_minus_grpo/{t}/{m}_hi": d["hi"]})
            mlflow.log_metrics(finite_metrics(flat), step=e["n"])
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def compare(grpo: dict, sft: dict, params: Params, out: Path) -> dict:
    rows = compare_rows(grpo, sft, out, params.evaluate.interval_level, params.evaluate.bootstrap_resamples)
    result = {"sizes": rows, "level": params.evaluate.interval_level,
              "resamples": params.evaluate.bootstrap_resamples, "seeds": sft["seeds"]}
    write_json(out / "arms.json", result)
    write_text(out / "arms.md", table(rows))
    plot(rows, grpo, out / "arms.png")
    result["mlflow_run_id"] = log_mlflow(params, rows, [out / "arms.json", out / "arms.md", out / "arms.png"])
    write_json(out / "arms.json", result)
    print(table(rows))
    print("micro-repro: GRPO vs SFT " + json.dumps({k: verdict(c) for k, c in rows[-1]["metrics"].items()})
          if rows else "micro-repro: no size both arms trained")
    return result
