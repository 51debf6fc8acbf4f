"""CPU micro-reproduction of VideoChat-R1's claim on the synthetic benchmark: a little GRPO data lifts
spatio-temporal perception, general QA is kept.

    python recipes/micro_repro.py                      # recipes/micro-repro.yaml into runs/micro-repro
    python recipes/micro_repro.py -S train.learning_rate=2e-4 --sizes 0,16
    python recipes/micro_repro.py --arms grpo,sft          # + the supervised arm and the GRPO-vs-SFT comparison

One workspace (runs/micro-repro) holds everything: params.yaml (params.yaml + the recipe), the synthetic data,
one GRPO run per training-set size and GRPO seed, and their evaluations. GRPO starts from the shipped base model
(pretrained/tiny-qwen2_5_vl, recipes/pretrain_base.py), as a user starts from Qwen2.5-VL-7B; with sft.enabled a
supervised warm start (stage sft, on training samples GRPO never sees) is trained first and GRPO starts from it.
Every step is the project's own stage code, called with the recipe's params. Sizes are samples PER TASK, nested
(the N samples are the first N of the 2N), and size 0 is the start model itself. Each size > 0 is trained once per
GRPO seed (train.seed); the table gives the mean and the spread. Results: results.json, results.md (the table in
the README), curve.png, all logged to one MLflow run (metrics with step = size).
The supervised arm (`--arms sft`, recipes/micro_repro_sft.py) trains SFT on the gold answers of the same subsets
from the same start model (lr and epochs chosen per size on a validation split) and writes sft.json/sft.md; with
both arms' results present, recipes/micro_repro_arms.py compares them (arms.md, arms.png, one MLflow run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.apply import overrides  # noqa: E402
from stages import tasks as task_registry  # noqa: E402
from stages.blind import blind_reference, reference_metrics  # noqa: E402
from stages.io import read_json, read_jsonl, write_json, write_jsonl, write_text  # noqa: E402
from stages.params import Params, load_params  # noqa: E402

COLUMNS = [("tg", "mIoU"), ("tg", "R@0.5"), ("gqa", "accuracy"), ("gqa", "evidence_mIoU"),
           ("tracking", "AO"), ("tracking", "SR@0.5"), ("qa", "accuracy")]


ARMS = ("grpo", "sft")
# The supervised arm's settings (recipes/micro_repro_sft.py): not part of the GRPO arm's config key.
SFT_ARM_DEFAULTS = {"arms": ["grpo"], "sft_lrs": [1e-4, 3e-4, 1e-3], "sft_epochs": [1, 2, 4, 8],
                    "validation_per_task": 32}


def curve_settings(recipe: Path, cli_sizes: str | None, cli_seeds: str | None = None,
                   cli_arms: str | None = None) -> dict:
    """The recipe's own section (`micro_repro:`), which is not a params.yaml section."""
    tree = yaml.safe_load(recipe.read_text()) or {}
    cfg = {"sizes": [0, 16, 32, 64], "epochs": 4.0, "eval_per_task": None, "seeds": [0], **SFT_ARM_DEFAULTS,
           **(tree.get("micro_repro") or {})}
    if cli_arms:
        cfg["arms"] = cli_arms.split(",")
    if not cfg["arms"] or set(cfg["arms"]) - set(ARMS):
        raise ValueError(f"arms must be among {ARMS}, got {cfg['arms']}")
    if cli_sizes:
        cfg["sizes"] = [int(s) for s in cli_sizes.split(",")]
    if cli_seeds:
        cfg["seeds"] = [int(s) for s in cli_seeds.split(",")]
    if not cfg["seeds"] or len(set(cfg["seeds"])) != len(cfg["seeds"]):
        raise ValueError(f"seeds must be distinct and at least one, got {cfg['seeds']}")
    if sorted(set(cfg["sizes"])) != cfg["sizes"] or cfg["sizes"][0] < 0:
        raise ValueError(f"sizes must be increasing and >= 0, got {cfg['sizes']}")
    return cfg


def config_key(params_yaml: str, cfg: dict, arm: str = "grpo") -> str:
    """What a size's result depends on besides its own n: every param, the epochs, the seeds, the eval cap (and
    for the supervised arm its grid and validation split)."""
    fixed = {k: v for k, v in cfg.items() if k != "sizes" and (k not in SFT_ARM_DEFAULTS or arm == "sft")}
    fixed.pop("arms", None)
    if arm == "sft":
        fixed.pop("epochs")  # GRPO's epochs; the supervised arm chooses its own
    return hashlib.sha256((params_yaml + json.dumps(fixed, sort_keys=True)).encode()).hexdigest()


def finished_sizes(path: Path, key: str, cfg: dict) -> dict[int, dict]:
    """Rows of an earlier results.json made with the same config key, by n (none if the key differs)."""
    if not path.exists():
        return {}
    old = read_json(path)
    if old.get("config_key") != key:
        print(f"micro-repro: {path} was made with other params; every size runs again", flush=True)
        return {}
    return {row["n"]: row for row in old["sizes"] if row["n"] in cfg["sizes"]}


def recipe_params(recipe: Path, extra: list[str]) -> Params:
    """params.yaml of the repository with the recipe's sections and -S overrides on top."""
    return load_params(ROOT / "params.yaml", overrides(recipe, skip=("micro_repro",)) + extra)


def nested_subsets(rows: list[dict], sizes: list[int], seed: int) -> dict[int, list[dict]]:
    """Per task a seeded order of the unique training samples; size n takes the first n of each task."""
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], {})[r["id"]] = r  # type: ignore[index]
    order = {}
    for task, unique in sorted(by_task.items()):
        ids = sorted(unique)
        random.Random(f"{seed}/{task}").shuffle(ids)
        order[task] = [unique[i] for i in ids]
    short = {t: len(v) for t, v in order.items() if len(v) < sizes[-1]}
    if short:
        raise ValueError(f"not enough training samples for size {sizes[-1]}: {short} (raise synthesize.num_videos)")
    out = {}
    for n in sizes:
        subset = [r for t in sorted(order) for r in order[t][:n]]
        random.Random(f"{seed}/{n}").shuffle(subset)
        out[n] = subset
    return out


def evaluate_model(path: str, rows: list[dict], params: Params, out: Path) -> dict:
    """Held-out metrics; with evaluate.video_swap, also own - other per task: the same prompts answered with
    another video's frames (stages/video_swap.py), whether the answers use the video."""
    from stages import video_swap
    from stages.evaluate import generate_outputs

    t0 = time.process_time()
    think, e = params.build_samples.think, params.evaluate
    texts = generate_outputs(path, rows, e)
    metrics, records = task_registry.score_outputs(rows, texts, think, e.protocol)
    write_jsonl(out, records)
    result = {"metrics": metrics}
    if e.video_swap:
        swap = video_swap.measure(rows, {"model": records}, lambda _, swapped: generate_outputs(path, swapped, e),
                                  think, e.protocol, e.video_swap, e.interval_level, e.bootstrap_resamples,
                                  e.bootstrap_seed)
        result["video_swap"] = {t: {k: c[k] for k in ("metric", "own", "other", "delta", "lo", "hi")}
                                for t, c in swap.get("model", {}).items()}
    return {**result, "eval_cpu_s": round(time.process_time() - t0, 1)}


def train_size(n: int, rows: list[dict], params: Params, start: str, epochs: float, seed: int | None = None) -> dict:
    from stages import train

    samples = Path(params.build_samples.out_dir) / f"train-{n}.jsonl"
    write_jsonl(samples, rows)
    seed = params.train.seed if seed is None else seed
    p = params.train.model_copy(update={"out_dir": f"models/grpo-{n}-s{seed}", "max_steps": -1,
                                        "num_train_epochs": epochs, "seed": seed,
                                        "checkpoint_dir": f".cache/checkpoints/grpo-{n}-s{seed}"})
    model_p = params.model.model_copy(update={"name_or_path": start})
    t0, c0 = time.time(), time.process_time()
    summary = train.run(p, model_p, params.mlflow, str(samples), params.build_samples.think)
    return {"model": p.out_dir, "steps": summary["steps"], "train_wall_s": round(time.time() - t0, 1),
            "train_cpu_s": round(time.process_time() - c0, 1), "mlflow_run_id": summary["mlflow_run_id"]}


def seed_summary(runs: list[dict]) -> dict:
    """Mean, sample standard deviation, min and max over the seeds' metrics, per task and metric."""
    import statistics

    out: dict[str, dict] = {"mean": {}, "sd": {}, "min": {}, "max": {}}
    for task in runs[0]["metrics"]:
        for k in runs[0]["metrics"][task]:
            if k == "count":
                continue
            vals = [r["metrics"][task][k] for r in runs]
            for what, v in (("mean", statistics.fmean(vals)), ("sd", statistics.stdev(vals) if len(vals) > 1 else 0.0),
                            ("min", min(vals)), ("max", max(vals))):
                out[what].setdefault(task, {})[k] = round(v, 6)
    return out


def table(results: dict) -> str:
    seeds = len(results.get("seeds", [0]))
    arm = results.get("arm", "grpo").upper()
    head = (f"| {arm} samples per task | steps | train CPU min | "
            + " | ".join(f"{t} {m}" for t, m in COLUMNS) + " |")
    lines = [head, "|" + "---:|" * (3 + len(COLUMNS))]

    def cells(metrics: dict, sd: dict | None = None) -> str:
        def one(t: str, m: str) -> str:
            v = f"{metrics.get(t, {}).get(m, float('nan')):.3f}"
            return f"{v} ± {sd[t][m]:.3f}" if sd and t in sd and m in sd[t] and seeds > 1 else v
        return " | ".join(one(t, m) for t, m in COLUMNS)

    ref = results["reference"]
    lines.append(f"| reference: random well-formed answers, no video | - | - | {cells(ref)} |")
    lines.append(f"| reference: best blind answer, fit on the training set | - | - | {cells(results['blind_best'])} |")
    for row in results["sizes"]:
        label = f"0 ({results.get('start_label', 'start model')})" if row["n"] == 0 else str(row["n"])
        cpu = f"{row['train_cpu_s'] / 60:.1f}" if row["n"] else "-"
        sd = row.get("sd") if len(row.get("runs", [])) > 1 else None  # one run (the start model): no spread
        lines.append(f"| {label} | {row.get('steps', 0)} | {cpu} | {cells(row['metrics'], sd)} |")
    g = results["gain_at_largest"]
    lines.append("")
    lines.append(f"{arm} on {results['sizes'][-1]['n']} samples per task vs the start model"
                 + (f" (mean of {seeds} {arm} seeds; ± = standard deviation across seeds)" if seeds > 1 else "")
                 + ": " + ", ".join(f"{k} {v:+.3f}" for k, v in g.items()))
    swaps = [r for r in results["sizes"] if r.get("video_swap")]
    if swaps:  # evaluate.video_swap: the headline metric with the own video minus with another video's frames
        tasks = list(swaps[0]["video_swap"])
        lines += ["", "Do the answers use the video? Headline metric with the own video minus with another video's "
                  "frames, same prompts (mean of the seeds; about 0 = the answer ignores the frames):", "",
                  "| samples per task | " + " | ".join(tasks) + " |", "|" + "---:|" * (1 + len(tasks))]
        lines += [f"| {r['n']} | " + " | ".join(f"{r['video_swap'][t]:+.3f}" for t in tasks) + " |" for r in swaps]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    from stages.eval_plots import _pyplot, _save

    plt = _pyplot()
    evaluated = results["sizes"][0]["metrics"]  # the tasks the curve evaluated (not stvg unless it is trained)
    headline = {t: m for t, m in task_registry.headline().items() if t in evaluated}
    fig, axes = plt.subplots(1, len(headline), figsize=(4 * len(headline), 3.2))
    xs = [r["n"] for r in results["sizes"]]
    for ax, (task, metric) in zip(axes, headline.items(), strict=True):
        def series(key: str) -> list[float]:
            return [r.get(key, r["metrics"]).get(task, {}).get(metric, float("nan")) for r in results["sizes"]]
        arm = results.get("arm", "grpo").upper()
        ax.plot(xs, series("metrics"), "o-", label=f"after {arm}, mean over seeds (0 = start model)")
        ax.fill_between(xs, series("min"), series("max"), alpha=0.25, label=f"min-max over {arm} seeds")
        ref = results["reference"].get(task, {}).get(metric)
        if ref is not None:
            ax.axhline(ref, color="grey", linestyle="--", label="random answers, no video")
        blind = results["blind_best"].get(task, {}).get(metric)
        if blind is not None:
            ax.axhline(blind, color="black", linestyle=":", label="best blind answer")
        ax.set_title(f"{task} {metric}")
        ax.set_xlabel(f"{arm} training samples per task")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def log_mlflow(params: Params, results: dict, files: list[Path], run_name: str = "micro-repro") -> str:
    import mlflow

    from stages.mlflow_log import finite_metrics, setup

    setup(params.mlflow)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"recipe": "micro-repro", "stage": "micro_repro", "arm": results.get("arm", "grpo")})
        mlflow.log_params({"sizes": json.dumps([r["n"] for r in results["sizes"]]), "epochs": results["epochs"],
                           "seeds": json.dumps(results["seeds"]), "start_model": results["start_model"]})
        for row in results["sizes"]:
            flat = {f"curve/{t}/{k}": v for t, m in row["metrics"].items() for k, v in m.items() if k != "count"}
            flat.update({f"curve_sd/{t}/{k}": v for t, m in (row.get("sd") or {}).items() for k, v in m.items()})
            mlflow.log_metrics(finite_metrics(flat), step=row["n"])
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def data_stages(params: Params) -> None:
    """The pipeline's stages before the warm start, in dvc.yaml's order (stages/graph.py), each through its own
    main() on `params` written as this workspace's params.yaml: synthetic data, frames, samples, tiny model."""
    import importlib

    from stages import graph

    write_text(Path("params.yaml"), yaml.safe_dump(params.model_dump(), sort_keys=False))  # what each main() reads
    order = graph.stage_names(ROOT)
    t0 = time.time()
    for name in order[:order.index("sft")]:
        importlib.import_module(f"stages.{name}").main()
    samples = Path(params.build_samples.out_dir)
    print(f"micro-repro: data + tiny model in {time.time() - t0:.0f} s: train "
          f"{len(read_jsonl(samples / 'train.jsonl'))} eval {len(read_jsonl(samples / 'eval.jsonl'))}", flush=True)


def held_for_grpo(rows: list[dict], largest: int, recipe_largest: int, seed: int) -> list[dict]:
    """The samples the warm start must not see: the recipe's largest subset, so that a shorter curve (--sizes 0,4)
    starts from the same warm start as the full one; the run's own largest when the data are too few for that."""
    try:
        return nested_subsets(rows, [max(largest, recipe_largest)], seed)[max(largest, recipe_largest)]
    except ValueError:
        return nested_subsets(rows, [largest], seed)[largest]


def warm_start_pool(rows: list[dict], grpo_rows: list[dict]) -> list[dict]:
    """The training samples GRPO never sees: the warm start learns from these only, so every GRPO gain comes
    from samples the starting policy has not been fitted to."""
    used = {r["id"] for r in grpo_rows}
    return [r for r in rows if r["id"] not in used]


def warm_start(params: Params, pool: list[dict]) -> dict:
    from stages import sft

    path = Path(params.build_samples.out_dir) / "warm-start.jsonl"
    write_jsonl(path, pool)
    c0 = time.process_time()
    s = sft.run(params.sft, params.model, str(path), params.build_samples.think)
    s["cpu_s"] = round(time.process_time() - c0, 1)
    print(f"micro-repro: warm start ({params.sft.targets}) {s['examples']} examples, {s['steps']} steps, "
          f"loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}, {s['cpu_s']:.0f} CPU s", flush=True)
    return s


def start_model(params: Params) -> str:
    """Where GRPO starts: the recipe's model (the shipped base; a repository path is resolved against the
    repository, since the recipe runs in its workspace), or the warm start when sft is on."""
    if params.sft.enabled:
        return params.sft.out_dir
    path = Path(params.model.name_or_path)
    return str(ROOT / path) if not path.is_absolute() and (ROOT / path).exists() else params.model.name_or_path


def run_sizes(cfg: dict, results: dict, done: dict, path: Path, pred_dir: str, start: str, eval_rows: list[dict],
              params: Params, train_one, before_size=None) -> None:
    """Every size of one arm: size 0 is the start model itself, each size > 0 trained once per seed by
    train_one(n, seed) and evaluated on the held-out samples; results.json is rewritten after each size."""
    out = path.parent
    for n in cfg["sizes"]:
        if n in done:
            print(f"micro-repro: {pred_dir} n={n} kept (made with the same params and seeds {cfg['seeds']})",
                  flush=True)
            results["sizes"].append(done[n])
            continue
        extra = before_size(n) if (before_size and n) else {}
        runs = []
        for s in ([None] if n == 0 else cfg["seeds"]):
            run = {"seed": s}
            if n == 0:
                model = start
            else:
                run.update(train_one(n, s))
                model = run["model"]
            run.update(evaluate_model(model, eval_rows, params, out / f"{pred_dir}-{n}" /
                                      ("start.jsonl" if n == 0 else f"seed-{s}.jsonl")))
            runs.append(run)
            print(f"micro-repro: {pred_dir} n={n} seed={s} " + json.dumps(
                {t: run["metrics"][t].get(m) for t, m in task_registry.headline().items() if t in run["metrics"]})
                + (" own - other video " + json.dumps({t: v["delta"] for t, v in run["video_swap"].items()})
                   if "video_swap" in run else ""), flush=True)
        summary = seed_summary(runs)
        row = {"n": n, "runs": runs, "metrics": summary["mean"], "sd": summary["sd"], "min": summary["min"],
               "max": summary["max"], **extra}
        if all("video_swap" in r for r in runs):  # mean over seeds of own - other: do the answers use the video?
            row["video_swap"] = {t: round(sum(r["video_swap"][t]["delta"] for r in runs) / len(runs), 6)
                                 for t in runs[0]["video_swap"]}
        if n:
            row["steps"] = runs[0]["steps"]
            row["train_cpu_s"] = round(sum(r["train_cpu_s"] for r in runs) / len(runs), 1)
        results["sizes"].append(row)
        write_json(path, results)


def finish(results: dict, params: Params, out: Path, stem: str, run_name: str) -> None:
    """Gain at the largest size, the table, the plot and the MLflow run of one arm."""
    first, last = results["sizes"][0]["metrics"], results["sizes"][-1]["metrics"]
    results["gain_at_largest"] = {f"{t}.{m}": round(last[t][m] - first[t][m], 4)
                                  for t, m in task_registry.headline().items() if t in first and t in last}
    write_json(out / f"{stem}.json", results)
    write_text(out / f"{stem}.md", table(results))
    png = out / ("curve.png" if stem == "results" else f"{stem}-curve.png")
    plot(results, png)
    results["mlflow_run_id"] = log_mlflow(params, results, [out / f"{stem}.json", out / f"{stem}.md", png], run_name)
    write_json(out / f"{stem}.json", results)
    print(table(results))


def sft_arm(cfg: dict, params: Params, dumped: str, grpo: dict, train_rows: list[dict], subsets: dict,
            start: str, eval_rows: list[dict], out: Path, resume: bool) -> dict:
    """The supervised arm (recipes/micro_repro_sft.py) on the same subsets, start model and held-out samples."""
    from recipes import micro_repro_sft as arm

    key = config_key(dumped, cfg, "sft")
    done = finished_sizes(out / "sft.json", key, cfg) if resume else {}
    base = next((row for row in grpo["sizes"] if row["n"] == 0), None)
    if base is not None and 0 not in done:
        done[0] = base  # the GRPO arm just evaluated the same start model on the same held-out samples
    seed0 = cfg["seeds"][0]
    val_rows = arm.validation_rows(train_rows, subsets[cfg["sizes"][-1]], cfg["validation_per_task"],
                                   params.build_samples.seed)
    chosen: dict[int, dict] = {}

    def before_size(n: int) -> dict:
        chosen[n] = arm.choose(params, start, n, subsets[n], val_rows, cfg["sft_lrs"], cfg["sft_epochs"], seed0)
        print(f"micro-repro sft: n={n} chose lr {chosen[n]['lr']:g}, {chosen[n]['epochs']} epochs "
              f"(validation score {chosen[n]['score']:.3f}, {chosen[n]['cpu_s']:.0f} CPU s)", flush=True)
        return {"selection": chosen[n]}

    def sft_run(n: int, seed: int) -> dict:
        return arm.train_size(n, subsets[n], params, start, chosen[n]["lr"], chosen[n]["epochs"], seed)

    results = {**{k: grpo[k] for k in ("recipe", "seeds", "eval_samples", "start_model", "start_label",
                                       "reference", "blind_best")},
               "arm": "sft", "config_key": key, "epochs": "chosen per size on the validation split", "sft_lrs": cfg["sft_lrs"], "sft_epochs": cfg["sft_epochs"],
               "validation_samples": len(val_rows), "validation_ids": sorted(r["id"] for r in val_rows),
               "sizes": []}
    run_sizes(cfg, results, done, out / "sft.json", "sft-predictions", start, eval_rows, params, sft_run,
              before_size)
    finish(results, params, out, "sft", "micro-repro-sft")
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes/micro-repro.yaml"))
    ap.add_argument("--workdir", default=str(ROOT / "runs/micro-repro"))
    ap.add_argument("--sizes", help="GRPO training samples per task, e.g. 0,16,32,64 (default: the recipe's)")
    ap.add_argument("--seeds", help="GRPO seeds per size, e.g. 0,1,2 (default: the recipe's)")
    ap.add_argument("--arms", help="grpo, sft or grpo,sft (default: the recipe's; sft = the supervised comparison)")
    ap.add_argument("--reuse-data", action="store_true", help="keep the workspace's data (and warm start, if any)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the sizes results/results.json already has, if made with these exact params")
    ap.add_argument("-S", dest="set", action="append", default=[], help="section.key=value on top of the recipe")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = Path(args.recipe).resolve()
    cfg = curve_settings(recipe, args.sizes, args.seeds, args.arms)
    params = recipe_params(recipe, args.set)
    start = start_model(params)

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    dumped = yaml.safe_dump(params.model_dump(), sort_keys=False)
    write_text(Path("params.yaml"), dumped)
    key = config_key(dumped, cfg)
    done = finished_sizes(Path("results/results.json"), key, cfg) if args.resume else {}
    samples_dir = Path(params.build_samples.out_dir)
    reuse = args.reuse_data and (samples_dir / "train.jsonl").exists() and (
        not params.sft.enabled or Path(params.sft.out_dir, "model.safetensors").exists())
    if not reuse:
        data_stages(params)

    think, seed = params.build_samples.think, params.build_samples.seed
    eval_rows = read_jsonl(samples_dir / "eval.jsonl")
    if cfg["eval_per_task"]:
        from stages.evaluate import select

        eval_rows = select(eval_rows, cfg["eval_per_task"])
    train_rows = read_jsonl(samples_dir / "train.jsonl")
    subsets = nested_subsets(train_rows, cfg["sizes"], seed)
    if params.sft.enabled and not reuse:
        held = held_for_grpo(train_rows, cfg["sizes"][-1], curve_settings(recipe, None)["sizes"][-1], seed)
        ws = warm_start(params, warm_start_pool(train_rows, held))
        write_json(Path(params.sft.out_dir) / "sft.json", ws)
    results = {"recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe),
               "epochs": cfg["epochs"], "seeds": cfg["seeds"], "eval_samples": len(eval_rows),
               "start_model": params.sft.out_dir if params.sft.enabled else params.model.name_or_path,
               "start_label": "warm start" if params.sft.enabled else "shipped base", "config_key": key,
               "reference": reference_metrics(eval_rows, think, seed),
               "blind_best": blind_reference(subsets[cfg["sizes"][-1]], eval_rows, think),
               "sizes": []}
    if params.sft.enabled:
        results["warm_start"] = read_json(Path(params.sft.out_dir) / "sft.json")
    out = Path("results")
    if "grpo" in cfg["arms"]:
        def grpo_run(n: int, seed: int) -> dict:
            return train_size(n, subsets[n], params, start, cfg["epochs"], seed)

        run_sizes(cfg, results, done, out / "results.json", "predictions", start, eval_rows, params, grpo_run)
        finish(results, params, out, "results", "micro-repro")
    if "sft" in cfg["arms"]:
        sft_results = sft_arm(cfg, params, dumped, results, train_rows, subsets, start, eval_rows, out,
                              args.resume)
        if (out / "results.json").exists():
            from recipes import micro_repro_arms

            micro_repro_arms.compare(read_json(out / "results.json"), sft_results, params, out)
        return sft_results if "grpo" not in cfg["arms"] else results
    return results


if __name__ == "__main__":
    main()
