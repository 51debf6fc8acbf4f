"""What video costs in a GRPO step, side by side in one run (issue 16):

  1. step time of a video prompt vs a text prompt of the same token count (text in TRL's plain GRPOTrainer),
     for the video trainer as it was (every completion encodes its own copy of the video, the processor runs on
     every rollout) and as it is (each distinct video encoded once per forward; processed inputs from the input
     cache, warm as after a
     first epoch or an evaluation); text in TRL's trainer;
  2. vision-tower work per step against the distinct videos of the step: videos encoded per tower call
     (target: the distinct videos, not the G copies);
  3. a sample's model inputs end to end: decode + process vs frame-cache load + process vs input-cache load
     (target: input-cache load >= 50x decode + process);
  4. generation's share of a step, and one rollout's generate call plain, with transformers' static cache and
     with the G completions of a prompt sharing one prefill (stages/rl/rollout.py).

    python bench/bench_video_step.py                      # 6 steps after 1 warm-up, 3 interleaved rounds
    python bench/bench_video_step.py --steps 3 --rounds 1 --json out.json

Steps: tiny Qwen2.5-VL, 2 prompts x G = 8 completions of exactly 32 tokens, 8 frames of 112x84 per video (a new
clip per prompt), beta 0.04, one torch thread, each arm in its own process; CPU seconds of the process per step
(the steady measure on a shared machine), min and median over the arm's rounds of per-round medians. Inputs:
H.264 clips (bench/common.py) through the extract_frames stage at 2 fps, <= 256*28*28 px per frame, and the
tiny model's processor (Qwen2.5-VL's: patch 14, CLIP normalisation).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS, G, FRAMES, HEIGHT, WIDTH = 2, 8, 8, 84, 112
ARMS = {  # name: (video?, shared video features?, input cache: None | "warm", rollout engine)
    "text (TRL)": (False, False, None, "hf"),
    "video, per-row (before)": (True, False, None, "hf"),
    "video, shared": (True, True, None, "hf"),
    "video, shared + input cache (warm)": (True, True, "warm", "hf"),
    "video, shared + input cache + shared prefill": (True, True, "warm", "shared_prefill"),
}


def text_prompt(trainer, want: int, base: str) -> list[dict]:
    """A text-only prompt of exactly `want` tokens as the trainer tokenizes it: `base` padded with filler."""
    words = 0
    while True:
        prompt = [{"role": "user", "content": [{"type": "text", "text": base + " x" * words}]}]
        n = len(trainer._tokenize_prompts([prompt])[0][0])
        if n == want:
            return prompt
        if n > want:
            raise SystemExit(f"cannot pad a text prompt to exactly {want} tokens (got {n})")
        words += max(1, (want - n) // 2)


def one_arm(arm: str, steps: int, warmup: int, tokens: int) -> dict:
    """One arm in this process: per-step CPU seconds, generation's share, tower videos per call."""
    import torch

    torch.set_num_threads(1)
    from bench_train_common import PhaseClock, StepTimer, length_reward, split, timed_trainer, write_clips
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOTrainer

    from stages.model.input_cache import InputCache
    from stages.model.shared_video import TowerCounter, unshare_video_features
    from stages.model.tiny import build_tiny_model
    from stages.model.video_inputs import encode_sample
    from stages.params import TinyModelParams, TrainParams
    from stages.rl.video_grpo import VideoGRPOTrainer
    from stages.train import build_dataset, grpo_config

    video, shared, cache_state, engine = ARMS[arm]
    work = Path(tempfile.mkdtemp(prefix="bench-video-step-"))
    build_tiny_model(TinyModelParams(), work / "model")
    processor = AutoProcessor.from_pretrained(work / "model")
    rows = write_clips(work / "frames", (warmup + steps) * PROMPTS, FRAMES, HEIGHT, WIDTH)
    dataset = build_dataset(rows, ["tg"])
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(work / "model")
    p = TrainParams(tasks=["tg"], num_generations=G, per_device_train_batch_size=G * PROMPTS,
                    max_steps=warmup + steps, max_completion_length=tokens, learning_rate=1e-5, bf16=False,
                    save_steps=10 ** 9, logging_steps=1)
    args = grpo_config(p, str(work / "out"), use_cpu=True)
    args.shuffle_dataset = False  # both arms see the prompts in the same order
    clock = PhaseClock()
    counters: list = []

    class TowerCounts(TrainerCallback):  # runs before StepTimer closes the step
        def on_step_end(self, *a, **kw):
            clock.counts["tower_calls"] = sum(c.calls for c in counters)
            clock.counts["tower_videos"] = sum(c.videos for c in counters)
            clock.counts["tower_cpu_s"] = sum(c.seconds for c in counters)
            for c in counters:
                c.reset()

    common = dict(model=model, processing_class=processor, reward_funcs=[length_reward], args=args,
                  callbacks=[TowerCounts(), StepTimer(clock)])
    cache = None
    if video:
        if cache_state is not None:
            cache = InputCache(work / "inputs")
            if cache_state == "warm":  # as after a first epoch (or an evaluation) over the same samples
                for row in dataset:
                    cache.encode_sample(processor, row, row["prompt"])
                cache.hits = cache.misses = 0
        trainer = timed_trainer(clock, model.config)(train_dataset=dataset, input_cache=cache, rollout_engine=engine,
                                                     **common)
        if not shared:
            for m in {id(m): m for m in (trainer.model, trainer.ref_model) if m is not None}.values():
                unshare_video_features(m)
    else:  # TRL's own trainer
        probe = GRPOTrainer(train_dataset=dataset, **common)
        text = [text_prompt(probe, len(encode_sample(processor, r)["input_ids"]), r["prompt"]) for r in rows]
        del probe
        data = Dataset.from_list([{"prompt": t, "task": "tg", "solution": json.dumps(r["solution"])}
                                  for t, r in zip(text, rows, strict=True)])
        trainer = timed_trainer(clock, model.config, base=GRPOTrainer)(train_dataset=data, **common)
    counters.extend(TowerCounter(m) for m in {id(m): m for m in (trainer.model, trainer.ref_model)
                                              if m is not None}.values())
    trainer.generation_config.min_new_tokens = tokens
    trainer.train()
    measured = clock.steps[warmup:]
    splits = [split(r, "cpu_") for r in measured]
    out = {"arm": arm, "cpu_step": statistics.median(s["step"] for s in splits),
           "cpu_generate": statistics.median(s["generate"] for s in splits),
           "wall_step": statistics.median(r["step"] for r in measured),
           "tower_calls": statistics.median(r.get("n_tower_calls", 0) for r in measured),
           "tower_videos": statistics.median(r.get("n_tower_videos", 0) for r in measured),
           "tower_cpu_s": statistics.median(r.get("n_tower_cpu_s", 0) for r in measured),
           "distinct_videos": PROMPTS if video else 0}
    if cache is not None:
        out["input_cache"] = {"hits": cache.hits, "misses": cache.misses}
    shutil.rmtree(work, ignore_errors=True)
    return out


def inputs_end_to_end(repeat: int) -> dict:
    """Per clip, one sample's model inputs three ways (min of `repeat` each, CPU and wall seconds summed over the
    clips): decode + process, frame-cache load + process, input-cache load (tensors read once)."""
    import torch
    from bench_frames import params
    from common import make_clip
    from transformers import AutoProcessor

    from stages.extract_frames import extract_frames
    from stages.ingest import ingest
    from stages.io import read_jsonl
    from stages.model.input_cache import InputCache
    from stages.model.tiny import build_tiny_model
    from stages.model.video_inputs import encode, encode_sample, video_message
    from stages.params import IngestParams, TinyModelParams
    from stages.video.decode import read_frames
    from stages.video.extract import plan_for
    from stages.video.frames import read_cached

    work = Path(tempfile.mkdtemp(prefix="bench-video-inputs-"))
    for i, (sec, w, h) in enumerate([(15, 640, 360), (15, 1280, 720)]):
        make_clip(work / "clips" / f"clip{i}_{w}x{h}.mp4", sec, w, h, fps=25.0, seed=i)
    raw = work / "raw"
    ingest(IngestParams(source=str(work / "clips"), frame_folders=None, out_dir=str(raw),
                        cache_dir=str(work / "cache"), progress=False))
    p = params(raw_dir=str(raw), out_dir=str(work / "frames"), cache_dir=str(work / "cache"))
    extract_frames(p)
    build_tiny_model(TinyModelParams(), work / "model")
    processor = AutoProcessor.from_pretrained(work / "model")
    cache = InputCache(work / "inputs")

    def clock(fn) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    def best(fn) -> tuple[float, float]:
        runs = [clock(fn) for _ in range(repeat)]
        return min(r[0] for r in runs), min(r[1] for r in runs)

    totals = {"decode_process": [0.0, 0.0], "frames_process": [0.0, 0.0], "input_cache": [0.0, 0.0]}
    shapes = []
    for clip in read_jsonl(raw / "manifest.jsonl"):
        plan = plan_for(clip, p)
        path = work / "frames" / f"{clip['id']}.npy"
        frames = read_cached(path)
        row = {"prompt": "When does the event happen?", "frames": str(path), "fps": p.fps,
               "frame_times": frames.times}

        def decode_process():
            array = read_frames(clip["path"], plan.indices, "pyav", (plan.height, plan.width))
            encode(processor, video_message(row["prompt"]), array, row["fps"], row["frame_times"])

        def input_cache():
            got = cache.encode_sample(processor, row)  # memory-mapped: read every value once, as the forward will
            for v in got.values():
                if isinstance(v, torch.Tensor):
                    v.sum()

        cache.encode_sample(processor, row)  # fill
        for name, fn in (("decode_process", decode_process), ("frames_process", lambda: encode_sample(processor, row)),
                         ("input_cache", input_cache)):
            w, c = best(fn)
            totals[name][0] += w
            totals[name][1] += c
        shapes.append([len(frames.times), plan.height, plan.width])
    shutil.rmtree(work, ignore_errors=True)
    return {"clips": shapes, **{f"{k}_wall_s": v[0] for k, v in totals.items()},
            **{f"{k}_cpu_s": v[1] for k, v in totals.items()}}


def generation_engines(repeat: int, tokens: int) -> dict:
    """One rollout's generate call (2 prompts x G rows, sampled, exactly `tokens` tokens) three ways, interleaved:
    plain, with transformers' static cache (no torch.compile on CPU) and with one shared prefill per prompt.
    CPU seconds per call, min and median; and whether greedy decoding gives the same tokens."""
    import torch
    from bench_train_common import write_clips
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.model.shared_video import distinct_objects, share_video_features, video_index
    from stages.model.tiny import build_tiny_model
    from stages.model.video_inputs import encode_sample, model_video_kwargs
    from stages.params import TinyModelParams
    from stages.rl.rollout import SharedPrefill

    work = Path(tempfile.mkdtemp(prefix="bench-video-generate-"))
    build_tiny_model(TinyModelParams(), work / "model")
    processor = AutoProcessor.from_pretrained(work / "model")
    model = AutoModelForImageTextToText.from_pretrained(work / "model").eval()
    share_video_features(model)
    enc = [encode_sample(processor, r) for r in write_clips(work / "frames", PROMPTS, FRAMES, HEIGHT, WIDTH)]
    rows = [e for e in enc for _ in range(G)]
    width = max(len(e["input_ids"]) for e in rows)
    ids = torch.full((len(rows), width), processor.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(rows):  # left padding, as TRL pads
        ids[i, width - len(e["input_ids"]):] = torch.tensor(e["input_ids"])
        mask[i, width - len(e["input_ids"]):] = 1
    first, index = distinct_objects([r["pixel_values_videos"] for r in rows])
    cfg = model.config
    video = model_video_kwargs(rows, ids, cfg.video_token_id, cfg.image_token_id, [rows[i] for i in first])
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=processor.tokenizer.pad_token_id)

    def video_kwargs(m, rs, sub_ids):
        first_, index_ = distinct_objects([r["pixel_values_videos"] for r in rs])
        return model_video_kwargs(rs, sub_ids, cfg.video_token_id, cfg.image_token_id, [rs[i] for i in first_]), index_

    shared = SharedPrefill()

    def call(engine: str, sample: bool = True):
        extra = {"cache_implementation": "static"} if engine == "static cache" else {}
        with torch.no_grad(), video_index(index):
            if engine == "shared prefill":
                plain = lambda **a: model.generate(**a, do_sample=sample, **kw)  # noqa: E731
                return shared.generate(model, plain, {"input_ids": ids, "attention_mask": mask, **video}, None, rows,
                                       video_kwargs)
            return model.generate(input_ids=ids, attention_mask=mask, **video, do_sample=sample, **kw, **extra)

    engines = ("plain", "static cache", "shared prefill")
    greedy = {e: call(e, sample=False) for e in engines}
    seconds: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(repeat):
        for e in engines:
            c = time.process_time()
            call(e)
            seconds[e].append(time.process_time() - c)
    shutil.rmtree(work, ignore_errors=True)
    return {e: {"min_s": min(v), "median_s": statistics.median(v),
                "greedy_equal_to_plain": bool(torch.equal(greedy[e], greedy["plain"]))} for e, v in seconds.items()}


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    out = []
    for arm, rs in runs.items():
        steps = [r["cpu_step"] for r in rs]
        out.append({**rs[0], "cpu_step_min": min(steps), "cpu_step_median": statistics.median(steps),
                    "generate_share": statistics.median(r["cpu_generate"] / r["cpu_step"] for r in rs),
                    "rounds": len(rs)})
    return out


def report(arms: list[dict], inputs: dict, engines: dict, args) -> str:
    trl = arms[0]  # text in TRL's trainer
    lines = [f"{os.cpu_count()} CPUs, one torch thread per arm; {PROMPTS} prompts x G = {G}, {args.tokens} tokens, "
             f"{FRAMES} frames {WIDTH}x{HEIGHT}; medians of {args.steps} steps after {args.warmup} warm-up, "
             f"{args.rounds} interleaved rounds (min and median over rounds)", "",
             "| arm | CPU s/step min | median | x text TRL (min / median) "
             "| generate share | tower calls/step | videos encoded/call | distinct videos/step "
             "| tower forward CPU s/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in arms:
        per_call = a["tower_videos"] / a["tower_calls"] if a["tower_calls"] else 0.0
        lines.append(
            f"| {a['arm']} | {a['cpu_step_min']:.3f} | {a['cpu_step_median']:.3f} | "
            f"{a['cpu_step_min'] / trl['cpu_step_min']:.2f} / {a['cpu_step_median'] / trl['cpu_step_median']:.2f} "
            f"| {a['generate_share']:.0%} | {a['tower_calls']:.0f} | {per_call:.1f} | {a['distinct_videos']} | "
            f"{a['tower_cpu_s']:.3f} |")
    base = engines["plain"]
    lines += ["", f"One rollout's generate call ({PROMPTS} prompts x G = {G} rows, {args.tokens} sampled tokens), "
              f"CPU s, {2 * args.repeat} interleaved repeats:", "",
              "| engine | min | median | x plain (median) | greedy tokens = plain |", "|---|---:|---:|---:|---|"]
    for name, e in engines.items():
        lines.append(f"| {name} | {e['min_s']:.4f} | {e['median_s']:.4f} | "
                     f"{e['median_s'] / base['median_s']:.2f} | {e['greedy_equal_to_plain']} |")
    n = len(inputs["clips"])
    lines += ["", f"A sample's model inputs, {n} clips ({', '.join('x'.join(map(str, c)) for c in inputs['clips'])}"
              " frames x H x W), min of repeats, summed:", "",
              "| path | wall s | CPU s | x (wall) | x (CPU) |", "|---|---:|---:|---:|---:|"]
    base_w, base_c = inputs["decode_process_wall_s"], inputs["decode_process_cpu_s"]
    for key, name in (("decode_process", "decode + process"), ("frames_process", "frame-cache load + process"),
                      ("input_cache", "input-cache load")):
        w, c = inputs[f"{key}_wall_s"], inputs[f"{key}_cpu_s"]
        lines.append(f"| {name} | {w:.4f} | {c:.4f} | {base_w / w:.1f} | {base_c / max(c, 1e-9):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="repeats of each input path (part 3; x2 for part 4)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one arm, print its JSON
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one_arm(args.one, args.steps, args.warmup, args.tokens)))
        return {}
    # one thread: idle OpenMP threads spin on a busy machine and bill CPU time that is not work
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for _ in range(args.rounds):
        for arm in ARMS:
            proc = subprocess.run([sys.executable, __file__, "--one", arm, "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--tokens", str(args.tokens)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"{arm} failed:\n{proc.stderr[-3000:]}")
            runs[arm].append(json.loads(line[0][7:]))
            print(json.dumps(runs[arm][-1]), flush=True)
    import torch

    torch.set_num_threads(1)
    inputs = inputs_end_to_end(args.repeat)
    engines = generation_engines(args.repeat * 2, args.tokens)
    arms = summarize(runs)
    print("\n" + report(arms, inputs, engines, args))
    result = {"arms": arms, "inputs": inputs, "generate": engines, "runs": runs}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
