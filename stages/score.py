"""Score any model's outputs against annotations in the real upstream formats (`videorft score`).

Predictions are JSONL, one `{"id": ..., "output": "<model text>"}` per line, with the sample ids of the
annotation adapters (each task module's load_annotations, stages/tasks): Charades-STA
`<video_id>#<sentence_index>`, NExT-GQA its `id`, GOT-10k the sequence folder name, multiple-choice QA its `id`.
Outputs go through the same parser, rewards and metrics as training and the evaluate stage (stages/tasks.score_outputs),
so outputs of upstream checkpoints run elsewhere are scored exactly like ours.

Every annotated sample counts: a sample without a prediction is scored as an empty output (a failure) and
listed. Predictions for ids the annotations do not have, and prediction lines that cannot be read, are listed
too (with line numbers); the rest is scored.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable

from stages import tasks as task_registry


def read_predictions(lines: Iterable[bytes | str]) -> tuple[dict[str, str], list[dict]]:
    """{id: output} from JSONL lines, and the lines that could not be used: [{"line": n, "reason": ...}].

    Blank lines are skipped. A repeated id keeps its first line; the repeat is reported.
    """
    outputs: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[dict] = []
    for n, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as e:
            problems.append({"line": n, "reason": f"not UTF-8 text ({e.reason} at byte {e.start})"})
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append({"line": n, "reason": f"malformed JSON ({e.msg} at column {e.colno})"})
            continue
        if not isinstance(row, dict):
            problems.append({"line": n, "reason": f"a line must be a JSON object, got {type(row).__name__}"})
            continue
        sid, output = row.get("id"), row.get("output")
        if isinstance(sid, bool) or not isinstance(sid, (str, int)) or str(sid) == "":
            problems.append({"line": n, "reason": f"'id' must be a non-empty string or integer, got {sid!r:.80}"})
            continue
        if not isinstance(output, str):
            problems.append({"line": n, "id": str(sid),
                             "reason": f"'output' must be a string, got {type(output).__name__}"})
            continue
        sid = str(sid)
        if sid in outputs:
            problems.append({"line": n, "id": sid, "reason": f"duplicate id (first on line {first_line[sid]})"})
            continue
        outputs[sid], first_line[sid] = output, n
    return outputs, problems


def _mean_rewards(records: list[dict]) -> dict[str, float]:
    parts = [r["rewards"] for r in records if "rewards" in r]
    return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]} if parts else {}


def score_predictions(task: str, samples: list[dict], outputs: dict[str, str], think: bool = True,
                      rejected_ids: Iterable[str] = (), protocol: str = "ours") -> tuple[dict, list[dict]]:
    """Metrics over every sample (missing prediction = empty output) and one record per sample.

    protocol: "ours" or "upstream" (VideoChat-R1's evaluation scripts), docs/tasks.md; it decides `parsed` and
    the metrics, never the reward parts (those are training's).

    samples: adapter samples ({"id", "task", "solution", ...}); outputs: {id: model text}.
    Returns (report, records); report = {"task", "think", "protocol", "metrics", "mean_rewards", "missing",
    "unknown", "unscorable"},
    a record = {"id", "missing", "parsed", "rewards", "metrics", "solution"} (or {"id", "error"} if the
    sample's own annotation cannot be scored).
    """
    task_registry.get_task(task)
    texts = [outputs.get(str(s["id"])) for s in samples]
    missing = [str(s["id"]) for s, text in zip(samples, texts) if text is None]
    metrics, scored = task_registry.score_outputs([{**s, "id": str(s["id"]), "task": task} for s in samples],
                                                  [text or "" for text in texts], think, protocol,
                                                  keep_unscorable=True)
    records, unscorable = [], []
    for s, text, r in zip(samples, texts, scored):
        if "error" in r:  # an annotation the task cannot score (e.g. answer "H")
            unscorable.append({"id": r["id"], "reason": r["error"]})
            records.append(r)
            continue
        records.append({"id": r["id"], "task": task, "missing": text is None, "parsed": r["parsed"],
                        "rewards": r["rewards"], "metrics": r["metrics"], "solution": s["solution"]})
    known = {str(s["id"]) for s in samples} | {str(i) for i in rejected_ids}
    unknown = sorted(set(outputs) - known)
    report = {
        "task": task,
        "think": think,
        "protocol": protocol,
        "metrics": metrics.get(task) or task_registry.aggregate(task, []),
        "mean_rewards": _mean_rewards([r for r in records if "metrics" in r]),
        "missing": {"count": len(missing), "ids": missing},
        "unknown": {"count": len(unknown), "ids": unknown},
        "unscorable": unscorable,
    }
    return report, records


def load_samples(task: str, path: str, interval_policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """(samples, rejected) of `task` from a samples file build_samples wrote (`.jsonl`: rows already bound to the
    frames the model saw, e.g. data/samples/eval.jsonl) or from an annotation file in the task's upstream format."""
    if str(path).endswith(".jsonl"):
        from stages.io import read_jsonl

        return [r for r in read_jsonl(path) if r.get("task") == task], []
    return task_registry.load_annotations(task, path, interval_policy)


def score_files(task: str, annotations: str, predictions: str, think: bool = True,
                interval_policy: str = "clip", protocol: str = "ours") -> tuple[dict, list[dict]]:
    """score_predictions on files; the report also lists rejected annotations and unreadable prediction lines.

    Raises ValueError (naming the file) when the annotation file cannot be read or yields no sample of the task,
    OSError when a file is missing.
    """
    samples, rejected = load_samples(task, annotations, interval_policy)
    if not samples:  # e.g. the file of another task: scoring nothing is never what was meant
        why = "; ".join(sorted({r["reason"] for r in rejected})[:3]) or "the file holds no annotation"
        raise ValueError(f"{annotations}: no {task} sample could be read ({why})")
    with open(predictions, "rb") as f:
        outputs, malformed = read_predictions(f)
    report, records = score_predictions(task, samples, outputs, think, rejected_ids=[r["id"] for r in rejected],
                                        protocol=protocol)
    report["annotations"] = {
        "file": annotations,
        "samples": len(samples),
        "rejected": [{"id": r["id"], "reason": r["reason"]} for r in rejected],
    }
    report["predictions"] = {"file": predictions, "read": len(outputs), "malformed": malformed}
    return report, records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=sorted(task_registry.TASKS), help="task of the annotations")
    parser.add_argument("--annotations", required=True,
                        help="annotation file in the upstream format of the task, or a samples .jsonl build_samples "
                             "wrote (stvg: its answers name the sampled frames, so only the samples file scores it)")
    parser.add_argument("--predictions", required=True, help='JSONL, one {"id": ..., "output": "<model text>"} a line')
    parser.add_argument("--per-sample", metavar="OUT", help="write one JSONL record per sample here")
    parser.add_argument("--no-think", dest="think", action="store_false",
                        help="the prompts asked for no <think> block (format reward of the no-think layout)")
    parser.add_argument("--interval-policy", choices=["clip", "reject"], default="clip",
                        help="annotated intervals ending after the video: clip (as build_samples does) or reject")
    parser.add_argument("--protocol", choices=list(task_registry.PROTOCOLS), default="ours",
                        help="scoring protocol: ours (documented fixes) or upstream (VideoChat-R1's evaluation "
                             "scripts); NExT-GQA IoP/IoU are official in both (docs/tasks.md)")


def run(args: argparse.Namespace) -> int:
    """`videorft score`: metrics JSON on stdout, problems summarised on stderr; 2 if the inputs cannot be read."""
    from stages.io import write_jsonl

    try:
        report, records = score_files(args.task, args.annotations, args.predictions, args.think,
                                      args.interval_policy, args.protocol)
    except (OSError, ValueError) as e:
        print(f"score: {e}", file=sys.stderr)
        return 2
    if args.per_sample:
        write_jsonl(args.per_sample, records)
    print(json.dumps(report, indent=2))
    p, a = report["predictions"], report["annotations"]
    notes = [f"{report['missing']['count']} of {a['samples']} samples have no prediction (scored as failures)",
             f"{report['unknown']['count']} predictions for unknown ids",
             f"{len(p['malformed'])} unreadable prediction lines",
             f"{len(a['rejected'])} rejected annotations",
             f"{len(report['unscorable'])} unscorable annotations"]
    if report["missing"]["count"] or report["unknown"]["count"] or p["malformed"] or a["rejected"] \
            or report["unscorable"]:
        print("score: " + "; ".join(notes), file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="videorft score", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
