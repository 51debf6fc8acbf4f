"""How sure is the demo's result? The demo's GRPO (params.yaml) from the shipped base, once per GRPO seed and per
variant (a set of -S style overrides), each evaluated on the demo's held-out samples against the base with paired
bootstrap intervals, and, as evaluate does with params.yaml's settings, the training reward on the same training
prompts (evaluate.reward_probe) and own - other video (evaluate.video_swap). One demo run is one draw: this is
how a setting is chosen by measurement.

    python bench/demo_seeds.py                                   # params.yaml as is, GRPO seeds 0 and 1
    python bench/demo_seeds.py --work runs/ds-slow -S synthesize.tracking_motion=0.5   # other data: own work dir
    python bench/demo_seeds.py --seeds 0,1,2 --variant paper-loss=train.loss_type=grpo \\
        --variant beta0.2=train.beta=0.2,train.loss_type=dapo

Work dir runs/demo-seeds: the demo's data stages run once (same params, same samples as `dvc repro`), the base
is evaluated once; every run's differences go to one table line on stdout and are appended to results.json (runs
of earlier calls in the work dir are kept, each with its overrides, -S settings and date). CPU: about 3 minutes
of wall time per run on 2 cores. Run it alone: two torch processes on 2 cores slow each other far more than 2x.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages import tasks as task_registry  # noqa: E402
from stages.io import read_jsonl, write_json  # noqa: E402
from stages.params import load_params  # noqa: E402

# Each task's headline metric, and tracking's parse rate (issue 12 watched it fall).
COLUMNS = list(task_registry.headline().items()) + [("tracking", "parse_rate")]


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    items = [s for s in re.split(r",(?=\s*train\.)", rest) if s]  # a comma inside a value (a YAML list) stays
    if not name or any("=" not in s for s in items):
        raise SystemExit(f"--variant wants NAME=key=value[,key=value...], got {text!r}")
    if any(not s.startswith("train.") for s in items):  # the data and the base are built once for all variants
        raise SystemExit(f"--variant {name}: only train.* settings can vary here, got {items}")
    return name, items


def previous_runs(path: Path) -> list[dict]:
    """The runs earlier calls in this work dir recorded: results.json accumulates (delete it to start over)."""
    return json.loads(path.read_text()).get("runs", []) if path.exists() else []


def evaluate(p, model: str, rows: list[dict]):
    """(metrics, per-sample records, follows): follows says per task whether the headline metric is above the
    range of the same answers shuffled among the samples (stages.blind.shuffled_line, as evaluate reports)."""
    from stages.blind import shuffled_line
    from stages.evaluate import follows_sample, generate_outputs

    outputs = generate_outputs(model, rows, p.evaluate)
    metrics, records = task_registry.score_outputs(rows, outputs, p.build_samples.think)[:2]
    line = shuffled_line(rows, outputs, p.evaluate.shuffle_rounds, p.evaluate.bootstrap_seed)
    follows = {t: {"own": round(metrics[t][m], 4), **{k: round(v, 4) for k, v in line[t][m].items()},
                   "follows": follows_sample(metrics[t][m], line[t][m]) == "answers follow the sample"}
               for t, m in task_registry.headline().items() if t in metrics and t in line and m in line[t]}
    return metrics, records, follows


def by_task(records: list[dict], task: str) -> list[dict]:
    return [r["metrics"] for r in records if r["task"] == task]


def checks(p, model: str, base: str, rows: list[dict], records: list[dict], base_records: list[dict]) -> dict:
    """What evaluate adds to the held-out figures, when params.yaml turns it on: the training reward on the same
    training prompts, candidate - base (evaluate.reward_probe), and own - other video per model
    (evaluate.video_swap: do the answers use the video?)."""
    from stages import video_swap
    from stages.evaluate import generate_outputs, grpo_sampling, training_reward_probe

    e, out = p.evaluate, {}
    if e.reward_probe:
        got = training_reward_probe(model, base, read_jsonl("data/samples/train.jsonl"), e, grpo_sampling(p))
        out["reward_probe"] = {t: {k: v[k] for k in ("delta", "lo", "hi")} for t, v in got.items()}
    if e.video_swap:
        paths = {"candidate": model, "baseline": base}
        got = video_swap.measure(rows, {"candidate": records, "baseline": base_records},
                                 lambda who, swapped: generate_outputs(paths[who], swapped, e),
                                 p.build_samples.think, e.protocol, e.video_swap, e.interval_level,
                                 e.bootstrap_resamples, e.bootstrap_seed)
        out["video_swap"] = {who: {t: {k: c[k] for k in ("delta", "lo", "hi")} for t, c in got.get(who, {}).items()}
                             for who in paths}
    return out


def summary_line(row: dict) -> str:
    """One run's line: each column's difference with its interval, then whether each task's answers follow."""
    cells = "  ".join(f"{k} {v['delta']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
                      for k, v in row.items() if isinstance(v, dict) and "delta" in v)
    follows = ", ".join(f"{t} {'yes' if v['follows'] else 'NO'}" for t, v in row.get("follows", {}).items())
    extra = "".join(f"; {name}: " + ", ".join(f"{t} {v['delta']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
                                             for t, v in part.items())
                    for name, part in (("training reward", row.get("reward_probe") or {}),
                                       ("own - other video", (row.get("video_swap") or {}).get("candidate") or {}))
                    if part)
    return (f"{row['variant']} seed {row['seed']} ({row['train_wall_s']:.0f} s, step {row['selected_step']}): "
            f"{cells}; follows the sample: {follows}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1", help="GRPO seeds (train.seed), comma-separated")
    ap.add_argument("--variant", action="append", default=[], help="NAME=key=value[,key=value...]; repeatable")
    ap.add_argument("--work", default="runs/demo-seeds")
    ap.add_argument("-S", dest="set", action="append", default=[],
                    help="section.key=value for every run, data included (e.g. synthesize.tracking_motion=0.5); "
                         "use a --work of its own: the data are made once per work dir")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("params.yaml", [])]
    seeds = [int(s) for s in args.seeds.split(",")]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = (ROOT / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the stages' relative paths (data/..., models/...) land in the work dir
    mlflow = [f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db"] + args.set
    base = str(ROOT / load_params(ROOT / "params.yaml", args.set).model.name_or_path)  # an absolute path stays
    p0 = load_params(ROOT / "params.yaml", mlflow + [f"model.name_or_path={base}"])

    from stages import bootstrap, build_samples, extract_frames, ingest, synthesize, train

    if not Path("data/samples/eval.jsonl").exists():
        synthesize.synthesize(p0.synthesize)
        ingest.ingest(p0.ingest)
        extract_frames.extract_frames(p0.extract_frames)
        build_samples.build(p0.build_samples, p0.extract_frames.out_dir)
    rows = read_jsonl("data/samples/eval.jsonl")
    base_metrics, base_records, base_follows = evaluate(p0, base, rows)
    print("base follows its samples: " + ", ".join(f"{t} {v['own']:.3f} vs shuffled [{v['lo']:.3f}, {v['hi']:.3f}]"
                                                     f"{'' if v['follows'] else ' NO'}" for t, v in base_follows.items()),
          flush=True)
    evaluated = {r["task"] for r in base_records}

    results = previous_runs(Path("results.json"))
    for name, items in variants:
        for seed in seeds:
            p = load_params(ROOT / "params.yaml", mlflow + [f"model.name_or_path={base}", f"train.seed={seed}"] + items)
            out = f"models/{name}-s{seed}"
            tp = p.train.model_copy(update={"out_dir": out, "checkpoint_dir": f".cache/ck-{name}-s{seed}",
                                            "resume": False})
            t0 = time.time()
            summary = train.run(tp, p.model, p.mlflow, "data/samples/train.jsonl", p.build_samples.think)
            wall = time.time() - t0
            _, records, follows = evaluate(p, out, rows)
            row = {"variant": name, "overrides": items, "set": args.set, "seed": seed,
                   "date": time.strftime("%Y-%m-%d %H:%M"), "train_wall_s": round(wall, 1),
                   "mlflow_run_id": summary.get("mlflow_run_id"),
                   "selected_step": summary.get("selected_step")}  # train.validation's pick (else the last)
            for task, metric in [(t, m) for t, m in COLUMNS if t in evaluated]:
                iv = bootstrap.paired_interval(task, by_task(records, task), by_task(base_records, task),
                                               level=p.evaluate.interval_level,
                                               resamples=p.evaluate.bootstrap_resamples,
                                               seed=p.evaluate.bootstrap_seed)[metric]
                row[f"{task}.{metric}"] = {k: round(iv[k], 6) for k in ("delta", "lo", "hi")}
            row["follows"] = follows
            row |= checks(p, out, base, rows, records, base_records)
            results.append(row)
            print(summary_line(row), flush=True)
            write_json("results.json", {"base": base_metrics, "base_follows": base_follows, "runs": results})


if __name__ == "__main__":
    main()
