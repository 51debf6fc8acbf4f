"""Can the tiny model learn a task from the GOLD answers at all? Supervised training (stage sft's own encoding and
loss) with held-out greedy evaluation every few epochs: the diagnostic behind the micro-reproduction's warm start
(docs/micro-repro.md). RL can only sharpen what the policy can represent; this finds out what it can.

    python recipes/warm_start_probe.py --workdir runs/probe --tasks tg --epochs 32 --every 8 --lr 5e-4
    python recipes/warm_start_probe.py --workdir runs/probe --tasks tg --target colour --lr 2e-3   # is the video used?

`--target colour` asks "What colour is the object?" of the tg videos (one object each in the recipe): the
simplest question whose answer only the video holds. The workspace's data is made with the recipe's params
(recipes/micro-repro.yaml + -S overrides) when it is not there yet. Prints one line per epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.micro_repro import blind_reference, data_stages, recipe_params  # noqa: E402
from stages import tasks as task_registry  # noqa: E402
from stages.io import read_jsonl  # noqa: E402

COLOUR_PROMPT = "What colour is the object in the video? Answer inside <answer> </answer> tags."


def colour_row(row: dict) -> dict:
    """The tg sample's video with the colour question; the answer is the colour its sentence names, written in the
    qa layout (`<answer>red</answer>`)."""
    colour = re.search(r"\b(red|green|blue|yellow|purple|orange|white|black)\b", row["problem"]["sentence"])
    return {**row, "task": "qa", "prompt": COLOUR_PROMPT, "colour": colour.group(1),
            "solution": {"answer": colour.group(1)}}


def unique(rows: list[dict], tasks: list[str]) -> list[dict]:
    return list({r["id"]: r for r in rows if r["task"] in tasks}.values())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tasks", default="tg", help="comma-separated tasks trained on and evaluated")
    ap.add_argument("--target", choices=["gold", "colour"], default="gold")
    ap.add_argument("--per-task", type=int, default=None, help="training samples per task (default: all)")
    ap.add_argument("--epochs", type=int, default=32)
    ap.add_argument("--every", type=int, default=8, help="evaluate every this many epochs")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-per-task", type=int, default=64)
    ap.add_argument("-S", dest="set", action="append", default=[], help="section.key=value on top of the recipe")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = recipe_params(ROOT / "recipes/micro-repro.yaml", args.set)
    tasks = args.tasks.split(",")
    if args.target == "colour" and tasks != ["tg"]:
        raise SystemExit("--target colour asks about the tg videos: use --tasks tg")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    samples = Path(params.build_samples.out_dir)
    if not (samples / "train.jsonl").exists():
        data_stages(params)

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages import sft
    from stages.evaluate import generate_outputs, select

    torch.manual_seed(params.sft.seed)
    path = params.tiny_model.out_dir
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    train = sft.select_rows(unique(read_jsonl(samples / "train.jsonl"), tasks), args.per_task, params.sft.seed)
    held_out = select(unique(read_jsonl(samples / "eval.jsonl"), tasks), args.eval_per_task)
    if args.target == "colour":
        train, held_out = [colour_row(r) for r in train], [colour_row(r) for r in held_out]
        print(f"train {len(train)} held-out {len(held_out)}", flush=True)
    else:
        blind = blind_reference(train, held_out, params.build_samples.think)
        print(f"train {len(train)} held-out {len(held_out)} best blind answer "
              + json.dumps({t: blind[t] for t in tasks if t in blind}), flush=True)

    examples = [sft.encode_example(processor, r, params.build_samples.think) for r in train]
    c0 = time.process_time()

    def report(epoch: int, losses: list[float]) -> None:
        line = f"epoch {epoch} loss {sum(losses) / len(losses):.3f} cpu {time.process_time() - c0:.0f} s"
        if epoch % args.every == 0 or epoch == args.epochs:
            model.save_pretrained("probe-model")
            processor.save_pretrained("probe-model")
            texts = generate_outputs("probe-model", held_out, params.evaluate)
            if args.target == "colour":
                right = sum(f"<answer>{r['colour']}</answer>" in t for r, t in zip(held_out, texts))
                line += f" | held-out colour accuracy {right / len(held_out):.3f}"
            else:
                metrics = task_registry.score_outputs(held_out, texts, params.build_samples.think)[0]
                line += " | held-out " + json.dumps(metrics)
            line += f" | {len(set(texts))} distinct answers"
        print(line, flush=True)

    sft.fit(model, processor, examples, args.lr, args.epochs, args.batch_size, random.Random(params.sft.seed), report)

if __name__ == "__main__":
    main()
