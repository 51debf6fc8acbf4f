"""Is a model's tg error a bias or a miss? Its greedy tg spans on the held-out queries: the mean error of the start
and of the end against the gold, the mIoU as answered, the mIoU of the same spans moved by that mean error, and of
the moved spans given to the next query instead (a span that scores only on its own query was read from its video).

A base that knows where each event is but tells it late scores low as answered and high once moved; GRPO can remove
such a bias from the reward alone (docs/base-model.md, eighteenth round). A diagnostic, not a metric: the move uses
the gold spans.

    python bench/tg_timing.py --work runs/s24/ds-v6 pretrained/tiny-qwen2_5_vl-v6 runs/s24/ds-v6/models/params.yaml-s0

The work dir holds the demo's samples and frames (bench/demo_seeds.py makes them, or the repository after
`dvc repro`). About 10 s per model on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages import tasks as task_registry  # noqa: E402
from stages.io import read_jsonl  # noqa: E402
from stages.params import load_params  # noqa: E402
from stages.tasks.common import interval_iou as iou  # noqa: E402  (the metric's own IoU)


def timing(spans: list, golds: list) -> dict:
    """spans[i] (None if unparsed) against golds[i]: mean errors, mIoU as is, moved, and moved onto the next query."""
    pairs = [(s, g) for s, g in zip(spans, golds) if s]
    if not pairs:
        return {"answered": 0, "queries": len(golds)}
    ds = statistics.fmean(s[0] - g[0] for s, g in pairs)
    de = statistics.fmean(s[1] - g[1] for s, g in pairs)
    moved = [(s[0] - ds, s[1] - de) for s, _ in pairs]
    gold = [g for _, g in pairs]
    return {"answered": len(pairs), "queries": len(golds), "start_error": ds, "end_error": de,
            "mIoU": sum(iou(s, g) for s, g in pairs) / len(golds),
            "moved_mIoU": statistics.fmean(iou(m, g) for m, g in zip(moved, gold)),
            "moved_next_query_mIoU": statistics.fmean(iou(m, g) for m, g in zip(moved, gold[1:] + gold[:1]))}


def first_span(answer: str):
    span = task_registry.parse("tg", answer)
    if not span:
        return None
    return span[0] if isinstance(span[0], (list, tuple)) else span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=".", help="holds data/samples/eval.jsonl and data/frames")
    ap.add_argument("models", nargs="+", help="model paths or hub ids")
    args = ap.parse_args()
    models = [str(Path(m).resolve()) if Path(m).exists() else m for m in args.models]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(args.work)
    from stages.evaluate import generate_outputs

    p = load_params(ROOT / "params.yaml", [])
    rows = [r for r in read_jsonl("data/samples/eval.jsonl") if r["task"] == "tg"]
    golds = [r["solution"]["timestamps"] for r in rows]
    for model in models:
        t = timing([first_span(o) for o in generate_outputs(model, rows, p.evaluate)], golds)
        if not t["answered"]:
            print(f"{model}: no parsable tg answer of {t['queries']}")
            continue
        print(f"{model}: {t['answered']}/{t['queries']} answered; mean error start {t['start_error']:+.2f} s, end "
              f"{t['end_error']:+.2f} s; mIoU {t['mIoU']:.3f}, moved by the mean error {t['moved_mIoU']:.3f}, "
              f"moved and given to the next query {t['moved_next_query_mIoU']:.3f}")


if __name__ == "__main__":
    main()
