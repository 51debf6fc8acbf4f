"""Pretrain the tiny base model that the demo and the micro-reproduction start from, as a user starts from
Qwen2.5-VL-7B: a tiny Qwen2.5-VL that answers every task in the prompt's layout and perceives partially.

    python recipes/pretrain_base.py                   # recipes/pretrain-base.yaml -> pretrained/tiny-qwen2_5_vl
    python recipes/pretrain_base.py -S sft.epochs=10 --out /tmp/base    # a variant, elsewhere

How: the project's own stages make synthetic videos with seed 1 (the demo and the micro-reproduction use seed 0,
so none of their evaluation videos is seen here), a tiny model with random weights (stage tiny_model), then
supervised training on gold answers of the four tasks (stage sft's encoding, loss and loop), stopped while
perception is partial (docs/base-model.md says why and what it can do). Held-out pretraining samples are scored
with the evaluate stage's code at the recipe's `eval_epochs`; the curve, the blind line, the CPU time and the
weights' sha256 go to <out>/pretrain.json. Deterministic: same recipe, same torch thread count -> same bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.apply import overrides  # noqa: E402
from recipes.micro_repro import data_stages  # noqa: E402
from stages import tasks as task_registry  # noqa: E402
from stages import video_swap  # noqa: E402
from stages.blind import blind_reference, shuffled_line  # noqa: E402
from stages.io import read_jsonl, write_json, write_text  # noqa: E402
from stages.model.video_inputs import sample_frames  # noqa: E402
from stages.params import Params, load_params  # noqa: E402

RECIPE = ROOT / "recipes/pretrain-base.yaml"


def settings(recipe: Path) -> dict:
    tree = yaml.safe_load(recipe.read_text()) or {}
    cfg = {"out_dir": "pretrained/tiny-qwen2_5_vl", "eval_epochs": [], "eval_per_task": 64, "threads": 2,
           "targets": "gold", "box_scale": 0.7, "samples_per_task": {}, "repeat": {}, "shuffle_rounds": 50,
           "loss": "token", "phases": [], "init_box": "gold", "video_swap": False,
           "init_from": None, "span_shift": 0.0,
           **(tree.get("pretrain") or {})}
    scale = cfg["box_scale"]
    if not (isinstance(scale, (int, float)) or (isinstance(scale, list) and len(scale) == 2 and scale[0] <= scale[1])):
        raise ValueError(f"pretrain.box_scale must be a number or [low, high], got {scale!r}")
    shift = cfg["span_shift"]
    if not (isinstance(shift, (int, float)) or (isinstance(shift, list) and len(shift) == 2 and shift[0] <= shift[1])):
        raise ValueError(f"pretrain.span_shift must be seconds or [low, high], got {shift!r}")
    if cfg["init_box"] not in INIT_BOXES:
        raise ValueError(f"pretrain.init_box must be one of {INIT_BOXES}, got {cfg['init_box']!r}")
    for key in ("samples_per_task", "repeat"):
        if not isinstance(cfg[key], dict) or not all(isinstance(v, int) and v >= 1 for v in cfg[key].values()):
            raise ValueError(f"pretrain.{key} must map task names to counts >= 1, got {cfg[key]!r}")
    return cfg


def recipe_params(recipe: Path, extra: list[str]) -> Params:
    return load_params(ROOT / "params.yaml", overrides(recipe, skip=("pretrain",)) + extra)


def frame_times(row: dict) -> list[float]:
    """Presentation times of the frames the model sees for this sample (the row's frame_times)."""
    return sample_frames(row).times


def _grid(t: float) -> float:
    return round(t * 4) / 4  # the 0.25 s grid: one token per time for the tiny tokenizer


def shown_span(interval: list[float], times: list[float]) -> list[float] | None:
    """What the sampled frames show of an event: from the first frame inside it to the time the last such frame
    stands for (until the next frame). None when no sampled frame falls inside."""
    start, end = interval
    inside = [k for k, t in enumerate(times) if start <= t < end]
    if not inside:
        return None
    step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1.0
    return [_grid(times[inside[0]]), _grid(times[inside[-1]] + step)]


def centre_region(box: list[float], scale: float) -> list[float]:
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    return [round(cx - scale * w / 2, 2), round(cy - scale * h / 2, 2),
            round(cx + scale * w / 2, 2), round(cy + scale * h / 2, 2)]


# What a tracking row's prompt gives as the first frame's box during pretraining: its own (gold), or another training
# sequence's (other), so that copying the prompt's box and a motion prior no longer lowers the loss and only the
# frames tell where the object is (docs/base-model.md, sixteenth round). Evaluation always gives the true box.
INIT_BOXES = ("gold", "other")


def prompt_rows(rows: list[dict], init_box: str, seed: int, think: bool = False,
                prompt_dir: str | None = None) -> list[dict]:
    """rows with init_box="other": every tracking row's problem.init_box is another tracking row's (a seeded
    derangement over the tracking rows, by sample id, so it does not depend on the order of rows), and its prompt
    is rendered again from that problem (build_samples renders it once, with the true box)."""
    if init_box == "gold":
        return rows
    ids = sorted({r["id"] for r in rows if r["task"] == "tracking"})
    if len(ids) < 2:
        raise ValueError("pretrain.init_box=other needs at least two tracking sequences")
    order = ids[:]
    random.Random(f"init_box:{seed}").shuffle(order)
    donor = {a: b for a, b in zip(order, order[1:] + order[:1])}
    box = {r["id"]: r["problem"]["init_box"] for r in rows if r["task"] == "tracking"}

    def moved(r: dict) -> dict:
        problem = {**r["problem"], "init_box": box[donor[r["id"]]]}
        return {**r, "problem": problem, "prompt": task_registry.render_prompt("tracking", problem, think, prompt_dir)}

    return [moved(r) if r["task"] == "tracking" else r for r in rows]


# The tasks the `frames` targets have an objective for (related_solution); a frames run leaves other tasks' rows out.
FRAMES_TASKS = ("tg", "gqa", "tracking", "qa")


def row_scale(row: dict, box_scale, seed: int, salt: str = "") -> float:
    """The tracking target's scale for this sequence: box_scale itself, or for [low, high] a uniform draw that
    depends only on (seed, sample id), so it does not change with the order or the set of rows. Also the timing
    targets' shift (salt "shift:": a draw of its own)."""
    if not isinstance(box_scale, list):
        return float(box_scale)
    key = f"{seed}:{salt}{row['id']}".encode()
    u = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big")).random()
    return box_scale[0] + (box_scale[1] - box_scale[0]) * u


def shifted(span: list[float], by: float, duration: float | None) -> list[float]:
    """A timing target moved by `by` seconds on the 0.25 s grid, kept inside the video and at least one step long."""
    if not by:
        return span
    end_max = duration if duration else span[1] + abs(by)
    start = min(max(0.0, _grid(span[0] + by)), end_max - 0.25)
    return [start, max(start + 0.25, min(end_max, _grid(span[1] + by)))]


def select_training_rows(rows: list[dict], tasks: list[str], per_task: int | None, caps: dict[str, int],
                         repeat: dict[str, int], seed: int) -> list[dict]:
    """stage sft's selection (sft.select_rows, seeded) with a cap per task, `caps[task]` else `per_task`, and
    `repeat[task]` copies of a task's rows per epoch (a task with few rows is then seen as often as one with many
    distinct rows). The cap is taken from sft.select_rows' uncapped shuffle, which draws the same permutations, so
    no caps and no repeats give sft.select_rows' rows exactly."""
    from stages import sft

    shuffled = sft.select_rows([r for r in rows if r["task"] in tasks], None, seed)
    out = []
    for task in sorted({r["task"] for r in shuffled}):
        group = [r for r in shuffled if r["task"] == task]
        cap = caps.get(task, per_task)
        out += (group[:cap] if cap else group) * repeat.get(task, 1)
    return out


def related_solution(row: dict, box_scale, seed: int = 0, span_shift=0.0) -> dict:
    """The pretraining answer for the `frames` targets: related perception objectives, in each task's layout.
    tg and gqa evidence: the span the sampled frames show (docs/base-model.md), not the event's boundaries between
    frames; tracking: the object's central region (each box scaled by `box_scale` about its centre), not its
    extent; answer letters as they are. The gap to the gold answer is what RL has left to learn. box_scale
    [low, high]: one scale per sequence (row_scale), so the base is unsure how loose a box should be. span_shift
    (seconds, or [low, high] drawn per sample): the tg and gqa spans moved by it, so the base's samples already hold
    spans off the frame times and RL can choose among them (docs/base-model.md, seventeenth round)."""
    task, sol = row["task"], row["solution"]
    by = row_scale(row, span_shift, seed, "shift:") if task in ("tg", "gqa") else 0.0
    duration = (row.get("problem") or {}).get("duration") if isinstance(row.get("problem"), dict) else None
    if task == "tg":
        span = shown_span(sol["timestamps"], frame_times(row))
        return {"timestamps": shifted(span, by, duration)} if span else sol
    if task == "gqa":
        spans = [shown_span(g, frame_times(row)) for g in sol["glue"]]
        return {**sol, "glue": [shifted(s, by, duration) if s else g for s, g in zip(spans, sol["glue"])]}
    if task == "tracking":
        scale = row_scale(row, box_scale, seed)
        return {"boxes": [centre_region(b, scale) for b in sol["boxes"]]}
    return sol


def follows(metrics: dict, shuffled: dict) -> dict[str, bool]:
    """Per task: is the headline metric above the range its own answers score when shuffled among the held-out
    samples (stages.blind.shuffled_line)? False means the answers do not depend on their video and prompt."""
    from stages.evaluate import follows_sample

    headline = task_registry.headline()
    return {t: follows_sample(metrics[t][headline[t]], shuffled[t][headline[t]]) == "answers follow the sample"
            for t in metrics if t in shuffled and headline[t] in shuffled[t]}


def distinct_answers(rows: list[dict], outputs: list[str]) -> dict[str, int]:
    """Per task, how many different answers the model gave: a handful over many samples is an answer prior."""
    seen: dict[str, set] = {}
    for r, o in zip(rows, outputs):
        seen.setdefault(r["task"], set()).add(o.strip())
    return {t: len(v) for t, v in sorted(seen.items())}


def training_phases(cfg: dict, tasks: list[str], epochs: int) -> list[dict]:
    """pretrain.phases: [{tasks, epochs}, ...] trained one after the other (a curriculum: the timing tasks alone
    first, docs/base-model.md); none = one phase of sft.tasks for sft.epochs. A phase's rows are the selected
    training rows of its tasks; the shuffle's random stream runs on across phases, an optimizer starts per phase."""
    phases = cfg["phases"] or [{"tasks": list(tasks), "epochs": epochs}]
    for ph in phases:
        if not (isinstance(ph, dict) and {"tasks", "epochs"} <= set(ph) <= {"tasks", "epochs", "loss", "init_box"}
                and isinstance(ph["epochs"], int) and ph["epochs"] >= 1 and ph["tasks"]
                and set(ph["tasks"]) <= set(tasks) and ph.get("loss", cfg["loss"]) in ("token", "row")
                and ph.get("init_box", cfg["init_box"]) in INIT_BOXES):
            raise ValueError(f"pretrain.phases: each phase is {{tasks: [some of sft.tasks {tasks}], epochs: >= 1, "
                             f"loss: token|row (default pretrain.loss), init_box: gold|other (default "
                             f"pretrain.init_box)}}, got {ph!r}")
    if sum(ph["epochs"] for ph in phases) != epochs:  # so that pretrain.json's sft.epochs is what was trained
        raise ValueError(f"pretrain.phases: the phases' epochs must add up to sft.epochs ({epochs}), got {phases!r}")
    return [{"tasks": list(ph["tasks"]), "epochs": ph["epochs"], "loss": ph.get("loss", cfg["loss"]),
             "init_box": ph.get("init_box", cfg["init_box"])} for ph in phases]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrain(params: Params, cfg: dict, out: Path) -> dict:
    """Train from the workspace's tiny model on the workspace's samples; returns the record for pretrain.json."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages import sft
    from stages.evaluate import generate_outputs, select

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(params.sft.seed)
    think = params.build_samples.think
    samples = Path(params.build_samples.out_dir)
    start = str(ROOT / cfg["init_from"]) if cfg["init_from"] else params.tiny_model.out_dir  # a base to go on from
    processor = AutoProcessor.from_pretrained(start)
    model = AutoModelForImageTextToText.from_pretrained(start, dtype=torch.float32)
    train = select_training_rows(read_jsonl(samples / "train.jsonl"), params.sft.tasks,
                                 params.sft.max_samples_per_task, cfg["samples_per_task"], cfg["repeat"],
                                 params.sft.seed)
    if cfg["targets"] == "frames" and (skipped := sorted({r["task"] for r in train} - set(FRAMES_TASKS))):
        print(f"pretrain: the frames targets have no objective for {skipped}: their rows are left out", flush=True)
        train = [r for r in train if r["task"] in FRAMES_TASKS]
    held_out = select(read_jsonl(samples / "eval.jsonl"), cfg["eval_per_task"])
    record = {"examples": len(train), "held_out": len(held_out), "targets": cfg["targets"],
              "box_scale": cfg["box_scale"], "samples_per_task": cfg["samples_per_task"], "repeat": cfg["repeat"],
              "loss": cfg["loss"], "init_box": cfg["init_box"], "init_from": cfg["init_from"],
              "span_shift": cfg["span_shift"],
              "blind_best": blind_reference(train, held_out, think), "curve": []}
    if cfg["targets"] not in ("gold", "frames"):
        raise ValueError(f"pretrain.targets must be gold or frames, got {cfg['targets']!r}")
    if cfg["loss"] not in ("token", "row"):
        raise ValueError(f"pretrain.loss must be token or row, got {cfg['loss']!r}")
    phases = training_phases(cfg, params.sft.tasks, params.sft.epochs)
    record["phases"] = phases
    total_epochs = sum(ph["epochs"] for ph in phases)
    encoded: dict[str, list] = {}

    def examples(init_box: str) -> list:  # encoded once per kind of prompt box the phases use
        if init_box not in encoded:
            encoded[init_box] = [sft.encode_example(processor, r, think,
                                                    related_solution(r, cfg["box_scale"], params.sft.seed, cfg["span_shift"])
                                                    if cfg["targets"] == "frames" else None)
                                 for r in prompt_rows(train, init_box, params.sft.seed, think,
                                                      params.build_samples.prompt_dir)]
        return encoded[init_box]
    c0, t0 = time.process_time(), time.time()
    done = 0  # epochs of the phases before this one: eval_epochs count across phases

    def on_epoch(phase_epoch: int, losses: list[float]) -> None:
        epoch = done + phase_epoch
        line = {"epoch": epoch, "loss": round(sum(losses) / len(losses), 4),
                "cpu_s": round(time.process_time() - c0, 1)}
        if epoch in cfg["eval_epochs"] or epoch == total_epochs:
            ckpt = Path(f"checkpoints/epoch-{epoch}")
            model.save_pretrained(ckpt, safe_serialization=True)
            processor.save_pretrained(ckpt)
            outputs = generate_outputs(str(ckpt), held_out, params.evaluate)
            metrics = task_registry.score_outputs(held_out, outputs, think)[0]
            line["held_out"] = metrics
            line["shuffled"] = shuffled_line(held_out, outputs, int(cfg["shuffle_rounds"]), params.sft.seed)
            line["follows"] = follows(metrics, line["shuffled"])
            line["distinct_answers"] = distinct_answers(held_out, outputs)
            if cfg["video_swap"]:  # the same prompts with another video's frames: do the answers use the video?
                records = task_registry.score_outputs(held_out, outputs, think)[1]
                swap = video_swap.measure(held_out, {"model": records},
                                          lambda _, rows: generate_outputs(str(ckpt), rows, params.evaluate),
                                          think, "ours", cfg["eval_per_task"], 0.95, 1000, params.sft.seed)
                line["video_swap"] = {t: {k: v[k] for k in ("own", "other", "delta", "lo", "hi", "n")}
                                      for t, v in swap.get("model", {}).items()}
            record["curve"].append(line)
            headline = task_registry.headline()
            print("pretrain: " + json.dumps({**line, "held_out": {t: {k: metrics[t][k] for k in (headline[t],
                                           "parse_rate")} for t in metrics},
                                             "shuffled": {t: line["shuffled"][t].get(headline[t])
                                                          for t in line["shuffled"]},
                                             "video_swap": {t: [v["delta"], v["lo"], v["hi"]]
                                                            for t, v in line.get("video_swap", {}).items()}}),
                  flush=True)
        else:
            print("pretrain: " + json.dumps(line), flush=True)

    rng, losses = random.Random(params.sft.seed), []
    for ph in phases:  # one phase (sft.tasks, sft.epochs) unless the recipe sets pretrain.phases
        chosen = [e for e, r in zip(examples(ph["init_box"]), train) if r["task"] in ph["tasks"]]
        print(f"pretrain: epochs {done + 1}-{done + ph['epochs']} on {len(chosen)} rows of {ph['tasks']}", flush=True)
        losses += sft.fit(model, processor, chosen, params.sft.learning_rate, ph["epochs"], params.sft.batch_size,
                          rng, on_epoch, ph["loss"] == "row")
        done += ph["epochs"]
    record.update(steps=len(losses), first_loss=losses[0], last_loss=losses[-1],
                  cpu_s=round(time.process_time() - c0, 1), wall_s=round(time.time() - t0, 1))
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return record


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--workdir", default=str(ROOT / "runs/pretrain-base"))
    ap.add_argument("--out", help="where the model goes (default: the recipe's pretrain.out_dir, in the repository)")
    ap.add_argument("--reuse-data", action="store_true", help="keep the workspace's data and tiny model")
    ap.add_argument("-S", dest="set", action="append", default=[], help="section.key=value on top of the recipe")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = Path(args.recipe).resolve()
    cfg = settings(recipe)
    params = recipe_params(recipe, args.set)
    out = Path(args.out).resolve() if args.out else (ROOT / cfg["out_dir"])
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    write_text(Path("params.yaml"), yaml.safe_dump(params.model_dump(), sort_keys=False))
    if not (args.reuse_data and Path(params.build_samples.out_dir, "train.jsonl").exists()):
        data_stages(params)
    record = pretrain(params, cfg, out)
    record.update(recipe=str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe),
                  overrides=args.set, threads=cfg["threads"],
                  weights_sha256=sha256(out / "model.safetensors"),
                  params={k: params.model_dump()[k] for k in ("synthesize", "build_samples", "extract_frames",
                                                              "tiny_model", "sft")})
    write_json(out / "pretrain.json", record)
    final = record["curve"][-1]["held_out"] if record["curve"] else {}
    headline, blind = task_registry.headline(), record["blind_best"]
    print("pretrain: final held-out " + json.dumps({t: final[t].get(m) for t, m in headline.items() if t in final})
          + f"; blind {json.dumps({t: blind[t].get(m) for t, m in headline.items() if t in blind})}"
          + f"; {record['cpu_s']:.0f} CPU s -> {out}")
    return record


if __name__ == "__main__":
    main()
