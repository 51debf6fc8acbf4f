"""Stage evaluate: pinned greedy decoding of the candidate (trained) and the base model on the held-out samples of
every task; per-task metrics for both and the difference with its paired bootstrap interval (stages/bootstrap.py);
a general-ability regression check (multiple-choice QA) decided on that interval; the blind line (the best answer
that ignores the video, fit on the training samples); per-sample predictions; plots.

The base model's completions are cached outside the DVC outs (stages/eval_cache.py): evaluating a new candidate
on the same inputs does not run the base again. Writes metrics/eval.json, metrics/eval_samples.json (per-sample
metric rows of both models, for the promotion gate to pair with another evaluation), metrics/predictions.jsonl,
metrics/plots/*.png and the data of two of them (*.json, drawn by dvc.yaml's top-level plots), and logs
eval/<model>/<task>/<metric>, eval/delta{,_lo,_hi}/<task>/<metric>, the files and the plots to the training run.
Every metric is scored under `evaluate.protocol` (ours | upstream, docs/tasks.md), which both files record.
"""
from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from stages import bootstrap, eval_cache, eval_plots
from stages import tasks as task_registry
from stages.io import read_json, read_jsonl, write_json, write_jsonl
from stages.mlflow_log import TrackingUnavailable
from stages.params import EvaluateParams, MlflowParams, load_params


EVAL_SAMPLES = "eval_samples.json"


def select(rows: list[dict], cap: int | None) -> list[dict]:
    by_task = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    return [r for t in sorted(by_task) for r in (by_task[t][:cap] if cap else by_task[t])]


def delta(candidate: dict, baseline: dict) -> dict:
    return {
        t: {k: round(v - baseline[t][k], 6) for k, v in m.items() if k != "count" and k in baseline.get(t, {})}
        for t, m in candidate.items() if t in baseline
    }


def sample_table(cand_records: list[dict], base_records: list[dict], inputs_fp: str, protocol: str = "ours") -> dict:
    """eval_samples.json: per task, per sample id, the metric rows of both models (stages.tasks.sample_metrics),
    and the scoring protocol that made them."""
    tasks: dict[str, dict] = defaultdict(dict)
    for c, b in zip(cand_records, base_records, strict=True):
        tasks[c["task"]][c["id"]] = {"candidate": c["metrics"], "baseline": b["metrics"]}
    return {"inputs_sha256": inputs_fp, "protocol": protocol, "tasks": dict(sorted(tasks.items()))}


def intervals(samples: dict, p) -> dict:
    """{task: {metric: paired bootstrap interval of candidate - base}} from an eval_samples table."""
    out = {}
    for task, by_id in samples["tasks"].items():
        rows = list(by_id.values())
        out[task] = bootstrap.paired_interval(
            task, [r["candidate"] for r in rows], [r["baseline"] for r in rows],
            level=p.interval_level, resamples=p.bootstrap_resamples, seed=p.bootstrap_seed)
    return out


def general_check(candidate: dict, baseline: dict, p: EvaluateParams, ivs: dict) -> dict:
    """Did the candidate keep its general ability (e.g. multiple-choice QA accuracy)? Kept when a drop larger than
    the tolerance is excluded at the interval's level: lower bound of candidate - base >= -tolerance."""
    out = {"task": p.general_task, "metric": p.general_metric, "tolerance": p.general_tolerance}
    cand = candidate.get(p.general_task, {}).get(p.general_metric)
    base = baseline.get(p.general_task, {}).get(p.general_metric)
    iv = ivs.get(p.general_task, {}).get(p.general_metric)
    if cand is None or base is None or iv is None:
        return {**out, "kept": None, "reason": f"no {p.general_task} samples evaluated"}
    return {**out, "candidate": cand, "baseline": base, "delta": round(cand - base, 6), "lo": iv["lo"],
            "hi": iv["hi"], "level": iv["level"], "kept": bootstrap.drop_excluded(iv, p.general_tolerance)}


def blind_line(train_samples: str | None, rows: list[dict], think: bool, protocol: str = "ours") -> dict | None:
    """The best blind answer fit on the training samples (each once), scored on the held-out ones (same protocol)."""
    if not train_samples or not Path(train_samples).exists():
        return None
    from stages.blind import blind_reference

    unique = list({(r["task"], r["id"]): r for r in read_jsonl(train_samples)}.values())
    return {"fit_on": str(train_samples), "train_samples": len(unique),
            "metrics": blind_reference(unique, rows, think, protocol)}


def shuffled(rows: list[dict], cand_out: list[str], base_out: list[str], p: EvaluateParams) -> dict | None:
    """Each model's answers scored against other samples of their task (stages/blind.shuffled_line)."""
    if not p.shuffle_rounds:
        return None
    from stages.blind import shuffled_line

    args = dict(rounds=p.shuffle_rounds, seed=p.bootstrap_seed, level=p.interval_level, protocol=p.protocol)
    return {"rounds": p.shuffle_rounds, "seed": p.bootstrap_seed, "level": p.interval_level,
            "candidate": shuffled_line(rows, cand_out, **args), "baseline": shuffled_line(rows, base_out, **args)}


def follows_sample(own: float | None, line: dict | None) -> str:
    """A model's metric against the range of its shuffled answers (stages/blind.shuffled_line)."""
    if own is None or not line:
        return "n/a"
    own = round(own, 6)  # the line is rounded so; a constant answer scores exactly its shuffles
    return ("answers follow the sample" if own > line["hi"] else
            "answers score worse on their own samples" if own < line["lo"] else
            "NO sign the answers follow the sample")


def verdict(iv: dict | None) -> str:
    """What an interval of candidate - base says: a gain beyond noise, a loss beyond noise, or neither."""
    if iv is None:
        return "not judged (no interval)"
    return "learned" if iv["lo"] > 0 else ("WORSE" if iv["hi"] < 0 else "no significant change")


def _diff(iv: dict) -> str:
    return f"{iv['delta']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def report(result: dict) -> list[str]:
    """Per task: base, candidate, difference with its interval, parse rates, the blind line, and a verdict on the
    headline metric; last, whether anything was learned at all. Printed by evaluate and `videorft summary`."""
    cand, base = result["candidate"]["metrics"], result["baseline"]["metrics"]
    ivs, blind = result.get("intervals") or {}, (result.get("blind") or {}).get("metrics") or {}
    level = (result.get("interval") or {}).get("level")
    lines, learned = [], []
    headline = task_registry.headline()
    for task in [t for t in headline if t in cand] + [t for t in cand if t not in headline]:
        metric = headline.get(task) or next(k for k in cand[task] if k != "count")
        iv = ivs.get(task, {}).get(metric)
        c, b, bl = cand[task].get(metric), base.get(task, {}).get(metric), blind.get(task, {}).get(metric)
        lines.append(f"{task} {metric}: base {_num(b)} | candidate {_num(c)} | difference "
                     f"{_diff(iv) if iv else 'n/a (no interval)'} | parse rate "
                     f"{_num(base.get(task, {}).get('parse_rate'))} -> {_num(cand[task].get('parse_rate'))} | "
                     f"blind line {_num(bl)}")
        v = verdict(iv)
        sh, vs = result.get("shuffled") or {}, result.get("video_swap") or {}
        if v == "learned":
            constant = follows_sample(c, sh.get("candidate", {}).get(task, {}).get(metric)).startswith("NO")
            blind_eye = (vs.get("candidate") or {}).get(task, {}).get("verdict", "").startswith(("NO", "scores"))
            learned.append(f"{task} {metric}" + (" (answers do not follow the sample)" if constant else
                                                 " (answers do not use the video)" if blind_eye else ""))
            if bl is not None and c <= bl:
                v += ", but not above the blind line"
            if constant:
                v += "; the answers do not follow the sample (a better answer for every sample, not a better look)"
            elif blind_eye:
                v += "; the answers do not use the video (another video's frames score the same)"
        lines.append(f"  {task} {metric}: {v}" + (f" ({_diff(iv)})" if iv else ""))
        lines += [f"  {task} {metric} with {who}'s answers shuffled among the task's samples: "
                  f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}] against {_num(own)}: {follows_sample(own, m)}"
                  for who, own, m in (("base", b, sh.get("baseline", {}).get(task, {}).get(metric)),
                                      ("candidate", c, sh.get("candidate", {}).get(task, {}).get(metric))) if m]
        lines += [f"  {task} {metric} with another video's frames (same prompts, {s['n']} samples), {who}: "
                  f"{s['own']:.3f} own -> {s['other']:.3f} other, own - other {_diff(s)}: {s['verdict']}"
                  for who in ("baseline", "candidate") if (s := (vs.get(who) or {}).get(task))]
    trend = result.get("training_reward") or {}
    for task, t in trend.items():
        rose = "rose" if t["lo"] > 0 else ("FELL" if t["hi"] < 0 else "no significant change")
        lines.append(f"training reward {task} (sampled answers, steps' first half -> second half): "
                     f"{t['first_half']:.3f} -> {t['second_half']:.3f}, {_diff(t)}: {rose}")
    for task, t in (result.get("reward_probe") or {}).items():
        lines.append(f"training reward {task} (the same {t['prompts']} training prompts sampled {t['generations']}x "
                     f"as GRPO samples, base -> candidate): {t['baseline']['reward']:.3f} -> "
                     f"{t['candidate']['reward']:.3f}, {_diff(t)}: {t['verdict']}")
    at = f"{level:.0%} interval" if level else "no intervals"
    lines.append(f"Learned beyond noise ({at}): {', '.join(learned)}" if learned else
                 f"Nothing was learned: no task's headline metric improved beyond noise ({at})")
    return lines


def cache_dir(p: EvaluateParams) -> Path | None:
    """$VIDEORFT_CACHE_DIR/eval-baseline when set (one cache for several workspaces), else the parameter."""
    if not p.baseline_cache_dir:
        return None
    root = os.environ.get("VIDEORFT_CACHE_DIR")
    return Path(root) / "eval-baseline" if root else Path(os.path.expanduser(p.baseline_cache_dir))


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def generate_outputs(name_or_path: str, rows: list[dict], p: EvaluateParams) -> list[str]:
    from stages.model.generate import generate
    from stages.model.input_cache import input_cache
    from stages.model.load import load_model

    model, processor = load_model(name_or_path)
    return generate(model, processor, rows, p.max_new_tokens, p.batch_size, desc=f"evaluate {name_or_path}",
                    input_cache=input_cache(p.input_cache_dir))


def baseline_outputs(name_or_path: str, rows: list[dict], p: EvaluateParams,
                     hasher: eval_cache.FileHasher, inputs_fp: str) -> tuple[list[str], dict]:
    """The base model's completions, from the cache when the same model saw the same inputs the same way."""
    from stages.model.generate import DECODING

    if cache_dir(p) is None:
        return generate_outputs(name_or_path, rows, p), {"cached": False, "cache": None}
    cache = eval_cache.GenerationCache(cache_dir(p))
    parts = {
        "model": eval_cache.model_fingerprint(name_or_path, hasher),
        "inputs": inputs_fp,
        "decoding": {**DECODING, "max_new_tokens": p.max_new_tokens, "batch_size": p.batch_size},
        "code": eval_cache.code_fingerprint(_device()),
    }
    key = eval_cache.cache_key(parts["model"], parts["inputs"], parts["decoding"], parts["code"])
    ids = [r["id"] for r in rows]
    outputs = cache.get(key, ids)
    if outputs is not None:
        return outputs, {"cached": True, "cache": str(cache.path(key))}
    outputs = generate_outputs(name_or_path, rows, p)
    cache.put(key, ids, outputs, {**parts, "model_name": name_or_path})
    return outputs, {"cached": False, "cache": str(cache.path(key))}


def training_reward_probe(candidate: str, baseline: str, train_rows: list[dict], p: EvaluateParams, sampling) -> dict:
    """stages/reward_probe.probe on the models' paths: per task, candidate - base training reward on the same
    training prompts, sampled as GRPO samples them."""
    from stages.model.input_cache import input_cache
    from stages.model.load import load_model
    from stages.reward_probe import probe

    return probe(load_model(candidate), load_model(baseline), train_rows, p.reward_probe, sampling,
                 p.interval_level, p.bootstrap_resamples, p.bootstrap_seed, input_cache(p.input_cache_dir))


def video_swap(candidate: str, baseline: str, rows: list[dict], own: dict[str, list[dict]], p: EvaluateParams,
               hasher: eval_cache.FileHasher, think: bool) -> dict:
    """Both models answer the first evaluate.video_swap rows per task again with another video's frames
    (stages/video_swap.py); own: each model's per-sample records of `rows`. The base's answers are cached."""
    from stages import video_swap as vs

    def answer(who: str, swapped: list[dict]) -> list[str]:
        if who == "candidate":
            return generate_outputs(candidate, swapped, p)
        return baseline_outputs(baseline, swapped, p, hasher, eval_cache.inputs_fingerprint(swapped, hasher))[0]

    return vs.measure(rows, own, answer, think, p.protocol, p.video_swap, p.interval_level, p.bootstrap_resamples,
                      p.bootstrap_seed)


def run(p: EvaluateParams, candidate: str, baseline: str, samples_path: str, mlflow_p: MlflowParams,
        train_summary: str | None = None, think: bool = True, train_samples: str | None = None,
        params=None, lock_path: str = "dvc.lock", sampling=None) -> dict:
    """Evaluate candidate and base on the samples; with the training run known (train_summary), log the results
    into the training run and into an evaluation run of their own (`evaluation_run`); `params` (the whole
    parameter set) adds the upstream sections' params there. With `sampling` (GRPO's, stages/reward_probe.py)
    and `evaluate.reward_probe`, both models also sample training prompts: did the training reward rise?"""
    rows = select(read_jsonl(samples_path), p.max_samples_per_task)
    if not rows:
        raise ValueError(f"{samples_path}: no evaluation samples")
    trained = read_json(train_summary) if train_summary and Path(train_summary).exists() else {}
    run_id = trained.get("mlflow_run_id")
    client = _connect(mlflow_p) if run_id else None  # a tracking server that is down fails before generating
    hasher = eval_cache.FileHasher(cache_dir(p) / "file-hashes.json" if cache_dir(p) else None)
    inputs_fp = eval_cache.inputs_fingerprint(rows, hasher)
    candidate_fp = eval_cache.model_fingerprint(candidate, hasher)
    cand_out = generate_outputs(candidate, rows, p)
    cand_metrics, cand_records = task_registry.score_outputs(rows, cand_out, think, p.protocol)
    base_out, cache_info = baseline_outputs(baseline, rows, p, hasher, inputs_fp)
    hasher.save()
    base_metrics, base_records = task_registry.score_outputs(rows, base_out, think, p.protocol)
    samples = sample_table(cand_records, base_records, inputs_fp, p.protocol)
    ivs = intervals(samples, p)
    result = {
        "protocol": p.protocol,  # scoring protocol of every metric below (docs/tasks.md)
        "candidate": {"model": candidate, "model_sha256": candidate_fp, "metrics": cand_metrics},
        "baseline": {"model": baseline, "metrics": base_metrics, **cache_info},
        "delta": delta(cand_metrics, base_metrics),
        "intervals": ivs,
        "interval": {"method": "paired bootstrap, percentile", "level": p.interval_level,
                     "resamples": p.bootstrap_resamples, "seed": p.bootstrap_seed},
        "general": general_check(cand_metrics, base_metrics, p, ivs),
        "blind": blind_line(train_samples, rows, think, p.protocol),
        "shuffled": shuffled(rows, cand_out, base_out, p),
        "samples": len(rows),
        "samples_per_task": dict(sorted(Counter(r["task"] for r in rows).items())),
        "inputs_sha256": inputs_fp,
    }
    if p.video_swap:
        result["video_swap"] = video_swap(candidate, baseline, rows,
                                          {"candidate": cand_records, "baseline": base_records}, p, hasher, think)
        hasher.save()
    if p.reward_probe and train_samples and Path(train_samples).exists() and sampling is not None:
        result["reward_probe"] = training_reward_probe(candidate, baseline, read_jsonl(train_samples), p, sampling)
    history = eval_plots.reward_history(client, run_id) if client else {}
    result["training_reward"] = eval_plots.reward_trend(eval_plots.reward_rows(history, list(task_registry.TASKS)),
                                                        list(task_registry.TASKS), p.interval_level)
    out = Path(p.out_dir)
    write_json(out / "eval.json", result)
    write_json(out / EVAL_SAMPLES, samples)
    write_jsonl(out / "predictions.jsonl", [{"model": "candidate", **r} for r in cand_records]
                + [{"model": "baseline", **r} for r in base_records])

    plots = eval_plots.write_all(out / "plots", cand_records, base_records, cand_metrics, base_metrics, history, ivs)
    plots += eval_plots.write_data(out / "plots", cand_metrics, base_metrics, history, ivs, list(task_registry.TASKS),
                                   trained.get("validation"), result.get("reward_probe"))
    if client:
        files = [out / "eval.json", out / EVAL_SAMPLES, out / "predictions.jsonl"]
        _log(client, run_id, result, files, plots)
        evaluation_run(client, run_id, result, files, plots, samples_path, params, lock_path)
    return result


def _connect(mlflow_p: MlflowParams):
    from mlflow import MlflowClient

    from stages.mlflow_log import require_reachable, setup

    uri = setup(mlflow_p, experiment=False)
    require_reachable(uri)
    return MlflowClient(uri)


def _log(client, run_id: str, result: dict, files: list[Path], plots: list[Path]) -> None:
    """Metrics, intervals, predictions and plots go into the training run, next to its reward curves."""
    from mlflow.entities import Metric

    from stages.mlflow_log import finite_metrics

    tables = [(who, result[who]["metrics"]) for who in ("candidate", "baseline")]
    tables += [(f"delta{end}", {t: {k: iv[key] for k, iv in m.items()} for t, m in result["intervals"].items()})
               for end, key in (("", "delta"), ("_lo", "lo"), ("_hi", "hi"))]
    if result.get("blind"):
        tables.append(("blind", result["blind"]["metrics"]))
    flat = {f"eval/{who}/{t}/{k}": v for who, m in tables for t, mt in m.items() for k, v in mt.items()}
    for who in ("candidate", "baseline"):  # do the answers use the video (another video's frames, same prompts)?
        for t, sw in ((result.get("video_swap") or {}).get(who) or {}).items():
            flat |= {f"eval/video_swap/{who}/{t}/{k}": sw[k] for k in ("own", "other", "delta", "lo", "hi")}
    for t, pr in (result.get("reward_probe") or {}).items():  # did the training reward rise (same prompts)?
        flat |= {f"eval/reward_probe/{t}/{k}": v for k, v in (("baseline", pr["baseline"]["reward"]),
                 ("candidate", pr["candidate"]["reward"]), ("delta", pr["delta"]), ("lo", pr["lo"]), ("hi", pr["hi"]))}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite_metrics(flat).items()])
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path="eval")
    for f in plots:
        client.log_artifact(run_id, str(f), artifact_path="eval/plots")


TRAIN_RUN_TAG = "videorft.train_run_id"


def evaluation_run(client, train_run_id: str, result: dict, files: list[Path], plots: list[Path],
                   samples_path: str, params=None, lock_path: str = "dvc.lock") -> str:
    """The evaluation's own MLflow run, in the training run's experiment, tagged `videorft.train_run_id` (under a
    flow: the evaluate stage's nested run): the same metrics (every metric of both models, the difference and its
    interval ends, the blind line), the files and plots, the held-out samples as its dataset (context
    evaluation) and the evaluate / sample / frame settings as params. Returns its id."""
    from stages.lineage import start_stage_run
    from stages.run_inputs import log_run_inputs

    train = client.get_run(train_run_id)
    with start_stage_run("evaluate", run_name=f"evaluate-{train.info.run_name or train_run_id[:8]}",
                         tags={TRAIN_RUN_TAG: train_run_id}, experiment_id=train.info.experiment_id) as run:
        _log(client, run.info.run_id, result, files, plots)
        log_run_inputs(client, run.info.run_id, "evaluation", samples_path, params, lock_path)
    return run.info.run_id


def grpo_sampling(params):
    """How the training stage samples (for evaluate.reward_probe)."""
    from stages.reward_probe import Sampling

    t = params.train
    return Sampling(params.evaluate.reward_probe_generations, t.temperature, t.top_p, t.top_k,
                    t.max_completion_length, params.build_samples.think)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = load_params()
    try:
        from stages.sft import start_model

        res = run(params.evaluate, params.train.out_dir, start_model(params),
                  os.path.join(params.build_samples.out_dir, "eval.jsonl"), params.mlflow,
                  os.path.join(params.train.out_dir, "train_summary.json"), params.build_samples.think,
                  os.path.join(params.build_samples.out_dir, "train.jsonl"), params=params,
                  sampling=grpo_sampling(params))
    except TrackingUnavailable as e:
        raise SystemExit(f"evaluate: {e}") from None
    for t, m in res["candidate"]["metrics"].items():
        print(f"evaluate: {t}: candidate {m} | baseline {res['baseline']['metrics'][t]}")
        print(f"evaluate: {t}: candidate - base [{res['interval']['level']:.0%} interval]: "
              + ", ".join(f"{k} {_diff(iv)}" for k, iv in res["intervals"][t].items()))
    print(f"evaluate: scoring protocol {res['protocol']!r} (evaluate.protocol; docs/tasks.md)")
    for line in report(res):
        print(f"evaluate: {line}")
    g = res["general"]
    print(f"evaluate: base model results {'from cache' if res['baseline']['cached'] else 'computed'} "
          f"({res['baseline']['cache']}); general ability {g['task']}.{g['metric']}: kept={g['kept']}")


if __name__ == "__main__":
    main()
