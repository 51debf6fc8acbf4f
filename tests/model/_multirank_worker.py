"""One rank of the two-process GRPO run of tests/model/test_multirank_rewards.py (launched by `accelerate launch`).

Usage: python _multirank_worker.py SPEC.json   (SPEC: model_dir, rows, out_dir, seed)

The tiny model is rewired into a prompt-blind bigram sampler over answer-shaped tokens, so rollouts are parsable
answers of varied quality ("<answer>1 to 5</answer>", "<answer>B</answer>", "<answer>2 to 1 to 5</answer>",
...): the task rewards then take many values, and a wrong cross-rank aggregation shows. Everything after the
weights is the real pipeline: stages.train's dataset and GRPOConfig, VideoGRPOTrainer, the task reward functions.

Each rank writes rank<r>.jsonl: one line per reward-function call (step, name, task, solution, text, value).
Rank 0 also writes log_history.json (what TRL logged) and merged_metrics.json (tasks.gather_records over the
ranks' per-sample records, then aggregate_records).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

# token (as the tiny tokenizer spells it) -> the tokens that may follow it, with relative odds
GRAMMAR = {
    "\n": {"<": 1},  # end of the assistant header: the first completion token is "<"
    "<": {"answer": 1},
    "answer": {">": 1},
    ">": {"1": 2, "2": 2, "5": 1, "A": 1, "B": 1, "C": 1, "<|im_end|>": 3},
    "1": {" to": 1, "</": 1},
    "2": {" to": 1, "</": 1},
    "5": {" to": 1, "</": 1},
    " to": {" ": 1},
    " ": {"2": 1, "5": 3},
    "A": {"</": 1},
    "B": {"</": 1},
    "C": {"</": 1},
    "</": {"answer": 1},
}
LOGIT = 32.0  # every other token is ~e^-32 as likely


def make_bigram_sampler(model, tokenizer) -> None:
    """Zero every layer's residual write (attention and MLP outputs), so the last hidden state is the normalised
    embedding of the current token; give each grammar token a one-hot embedding and let lm_head map it to the
    logits of its successors."""
    ids = {}
    for text in set(GRAMMAR) | {t for nxt in GRAMMAR.values() for t in nxt}:
        enc = tokenizer.convert_tokens_to_ids(text) if text.startswith("<|") else tokenizer.encode(text)
        enc = [enc] if isinstance(enc, int) else enc
        if len(enc) != 1:
            raise RuntimeError(f"grammar token {text!r} is not one token of the tiny tokenizer: {enc}")
        ids[text] = enc[0]
    lm = model.model.language_model
    hidden = lm.embed_tokens.weight.shape[1]
    if len(GRAMMAR) > hidden:
        raise RuntimeError("grammar larger than the hidden size")
    scale = math.sqrt(hidden)  # RMSNorm of a one-hot vector
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for k, (cur, successors) in enumerate(GRAMMAR.items()):
            lm.embed_tokens.weight[ids[cur]] = 0.0
            lm.embed_tokens.weight[ids[cur], k] = 1.0
            for nxt, weight in successors.items():
                model.lm_head.weight[ids[nxt], k] = (LOGIT + math.log(weight)) / scale


def recording(fn, log: list):
    """The reward function, unchanged, also noting what it saw and returned."""

    def wrapped(prompts, completions, task, solution, id, trainer_state, **kwargs):
        out = fn(prompts, completions, task=task, solution=solution, id=id, trainer_state=trainer_state, **kwargs)
        for k, (c, t, s, i, v) in enumerate(zip(completions, task, solution, id, out, strict=True)):
            log.append({"step": trainer_state.global_step, "index": k, "name": fn.__name__, "task": t, "id": i,
                        "solution": json.loads(s), "text": c[0]["content"], "value": v})
        return out

    wrapped.__name__ = fn.__name__
    return wrapped


def main(spec_path: str) -> None:
    from accelerate import PartialState
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages import tasks as T
    from stages.params import TrainParams
    from stages.rl import launch
    from stages.rl.video_grpo import VideoGRPOTrainer
    from stages.train import build_dataset, grpo_config

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    state = PartialState(cpu=True)
    rank = state.process_index
    processor = AutoProcessor.from_pretrained(spec["model_dir"])
    model = AutoModelForImageTextToText.from_pretrained(spec["model_dir"])
    make_bigram_sampler(model, processor.tokenizer)

    p = TrainParams(tasks=["tg", "qa"], num_generations=4, per_device_train_batch_size=12, max_steps=2,
                    logging_steps=1, max_completion_length=16, learning_rate=1e-6, seed=spec["seed"],
                    deepspeed=spec.get("deepspeed"))
    args = grpo_config(p, str(out / "checkpoints"), use_cpu=True)
    if args.deepspeed:
        from stages.train import init_deepspeed_comm

        init_deepspeed_comm(args)
    args.shuffle_dataset = False  # prompts in dataset order: the spec decides which rank holds which task
    args.save_strategy = "no"
    calls: list[dict] = []
    trainer = VideoGRPOTrainer(
        model=model, processing_class=processor, args=args,
        reward_funcs=[recording(f, calls) for f in T.reward_functions(p.tasks, think=False)],
        train_dataset=build_dataset(spec["rows"], p.tasks),
    )
    if spec.get("per_row_video"):  # every completion encodes its own copy of the video (the path before sharing)
        from stages.model.shared_video import unshare_video_features

        for m in {id(m): m for m in (trainer.model, trainer.ref_model) if m is not None}.values():
            unshare_video_features(m)
    trainer.train()
    (out / f"rank{rank}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))

    # evaluation-style merge: one record per completion, plus a repeat of another rank's first sample, as a
    # distributed sampler pads a rank's last batch; the repeat must not count twice
    first = T.reward_names(p.tasks)[0]  # every function sees every completion: take one function's calls
    records = [{"id": f"{c['id']}/{c['step']}/{c['index']}", "task": c["task"],
                "metrics": T.sample_metrics(c["task"], c["text"], c["solution"])}
               for c in calls if c["name"] == first]
    shared = T.gather_records(records)
    if rank == 1:
        records.append(shared[0])
    merged = T.gather_records(records)
    if rank == 0:
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))
        (out / "merged_metrics.json").write_text(json.dumps(
            {"records": len(merged), "metrics": T.aggregate_records(merged)}))
    state.wait_for_everyone()
    launch.finish()  # as the train stage's workers do: no rank aborts in interpreter teardown


if __name__ == "__main__":
    main(sys.argv[1])
