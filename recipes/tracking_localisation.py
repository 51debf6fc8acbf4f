"""Does a model see where the tracked object is? Greedy tracking answers of a checkpoint on a workspace's samples,
scored by the distance (pixels of the source frame) between each predicted box centre and the gold centre, next to
what the static answer (the initial box for every frame) scores: the diagnostic behind "Why tracking does not move"
in docs/base-model.md. A model that localises beats the static line; one that only copies the prompt or replays
memorised motion does not.

    python recipes/tracking_localisation.py --workdir runs/pretrain-base --model pretrained/tiny-qwen2_5_vl
    python recipes/tracking_localisation.py --workdir . --samples data/samples/eval.jsonl --model models/run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.io import read_jsonl  # noqa: E402
from stages.tasks import tracking  # noqa: E402


def centre(box: list[float], width: float, height: float) -> tuple[float, float]:
    return (box[0] + box[2]) / 2 * width, (box[1] + box[3]) / 2 * height


def distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def centre_errors(outputs: list[str], gold: list[list[list[float]]], width: float, height: float) -> dict:
    """Per-frame centre errors of the parsed answers (frame 0 = the box the prompt gives) and of the static answer."""
    model, static, first, unparsed = [], [], [], 0
    for text, boxes in zip(outputs, gold):
        pred = tracking.parse(text)
        if not pred:
            unparsed += 1
            continue
        for k, (p, g) in enumerate(zip(pred, boxes)):
            e = distance(centre(p, width, height), centre(g, width, height))
            (first if k == 0 else model).append(e)
            if k:
                static.append(distance(centre(boxes[0], width, height), centre(g, width, height)))
    return {"answers": len(outputs), "unparsed": unparsed,
            "model_median_px": statistics.median(model) if model else None,
            "model_mean_px": statistics.fmean(model) if model else None,
            "static_median_px": statistics.median(static) if static else None,
            "first_box_median_px": statistics.median(first) if first else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a workspace with params.yaml and data/ (the pipeline's layout)")
    ap.add_argument("--samples", default="data/samples/eval.jsonl", help="relative to --workdir")
    ap.add_argument("--model", required=True)
    ap.add_argument("--limit", type=int, default=48, help="tracking samples (first N)")
    ap.add_argument("--width", type=float, default=224.0, help="source frame width (px) the boxes are normalised to")
    ap.add_argument("--height", type=float, default=168.0)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = str(Path(args.model).resolve())
    os.chdir(args.workdir)
    from stages.evaluate import generate_outputs
    from stages.params import load_params

    rows = [r for r in read_jsonl(Path(args.samples)) if r["task"] == "tracking"][: args.limit]
    outputs = generate_outputs(model, rows, load_params().evaluate)
    result = {"model": args.model, "samples": args.samples,
              **centre_errors(outputs, [r["solution"]["boxes"] for r in rows], args.width, args.height)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
