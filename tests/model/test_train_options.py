"""Training options do what they promise: frozen vision tower, LoRA, gradient checkpointing, zero-spread group
filtering, T-GRPO's temporal bonus, per-task sampling weights, per-box credit."""
import json
import math

import numpy as np
import pytest
import torch
from test_video_grpo import length_reward, make_trainer, rollout, tg_rows

pytestmark = pytest.mark.filterwarnings("ignore")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict, model) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def loss_and_grads(tr, batch) -> tuple[float, dict]:
    tr.model.zero_grad()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    return loss.item(), grads(tr.model)


# -- frozen vision tower -----------------------------------------------------------------------------------

def test_frozen_vision_tower_gets_no_gradient_and_keeps_its_weights(tiny_model_dir, frame_files, tmp_path):
    from transformers import AutoModelForImageTextToText

    from stages.rl.policy import freeze_vision_tower, vision_tower

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    frozen = freeze_vision_tower(model)
    visual = {id(p) for p in vision_tower(model).parameters()}
    assert frozen == sum(p.numel() for p in vision_tower(model).parameters()) > 0
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path, model=model)
    before = snapshot(tr.model)
    tr.train()
    names = {n for n, p in tr.model.named_parameters() if id(p) in visual}
    moved = changed(before, tr.model)
    assert names and not (moved & names), "a frozen vision weight changed"
    assert all(p.grad is None for p in tr.model.parameters() if id(p) in visual)
    assert moved, "the language model must still train"


# -- LoRA ----------------------------------------------------------------------------------------------------

def test_lora_trains_only_adapters_and_starts_at_the_reference(tiny_model_dir, frame_files, tmp_path):
    from stages.params import LoraParams
    from stages.rl.policy import lora_config

    cfg = lora_config(LoraParams(enabled=True, r=4, alpha=8, dropout=0.0))
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path, trainer_kwargs={"peft_config": cfg})
    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable), "the vision tower is excluded by default"
    before = snapshot(tr.model)
    tr.train()
    moved = changed(before, tr.model)
    assert moved and moved <= trainable, sorted(moved - trainable)[:5]
    assert any("lora_B" in n for n in moved)
    # the reference is the base (adapter disabled) and lora_B starts at zero: the first step's KL is exactly 0
    assert tr.state.log_history[0]["kl"] == 0.0


def test_lora_merge_gives_a_plain_model_with_the_adapters_effect(tiny_model_dir, frame_files, tmp_path):
    from transformers import AutoModelForImageTextToText

    from stages.params import LoraParams
    from stages.model.load import merge_lora
    from stages.rl.policy import lora_config

    cfg = lora_config(LoraParams(enabled=True, r=4, alpha=8, dropout=0.0))
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path / "t", trainer_kwargs={"peft_config": cfg})
    tr.train()
    tr.save_model(str(tmp_path / "adapter"))
    merge_lora(tiny_model_dir, str(tmp_path / "adapter"), str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "model.safetensors").exists()
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[1, 5, 9, 30, 31, 40, 2]])
    tr.model.eval()
    with torch.no_grad():
        want = tr.model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        orig = base(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, orig, atol=1e-5), "the merged model must differ from the base"


# -- gradient checkpointing ----------------------------------------------------------------------------------

def test_gradient_checkpointing_recomputes_activations_and_keeps_the_gradient(tiny_model_dir, frame_files, tmp_path):
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path, gradient_checkpointing=True)
    assert tr.args.activation_checkpointing and tr.args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    _, batch = rollout(tr)
    # a pre-hook inside the checkpointed layer forward runs again when backward recomputes the layer (a post-hook
    # may not: the recompute stops as soon as the saved tensors are rebuilt)
    inner = tr.model.model.language_model.layers[0].mlp
    calls = []
    handle = inner.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        loss_plain, g_plain = loss_and_grads(tr, batch)
        plain_calls = len(calls)
        calls.clear()
        tr.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=tr.args.gradient_checkpointing_kwargs)
        loss_ckpt, g_ckpt = loss_and_grads(tr, batch)
    finally:
        handle.remove()
    assert len(calls) == 2 * plain_calls, (plain_calls, len(calls))  # forward + recompute in backward
    assert math.isclose(loss_plain, loss_ckpt, rel_tol=1e-6, abs_tol=1e-7)
    assert g_plain.keys() == g_ckpt.keys()
    assert all(torch.allclose(g_plain[n], g_ckpt[n], atol=1e-6) for n in g_plain)
    assert any(".visual." in f".{n}" for n in g_ckpt), "the vision tower still gets gradients"


# -- group filtering -----------------------------------------------------------------------------------------

def test_zero_std_rows_table():
    from stages.rl.group_filter import total_rewards, zero_std_rows

    nan = float("nan")
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.5, nan, 2.0, nan, nan, 0.3, 0.3, nan, 0.3])
    assert zero_std_rows(r, 4).tolist() == [True] * 4 + [False] * 4 + [True] * 4 + [True] * 4
    per_func = torch.tensor([[1.0, nan], [nan, nan], [0.5, 0.5]])
    assert torch.allclose(total_rewards(per_func, torch.tensor([1.0, 2.0])), torch.tensor([1.0, nan, 1.5]),
                          equal_nan=True)


def test_zero_std_groups_contribute_nothing_and_the_fraction_is_logged(tiny_model_dir, frame_files, tmp_path):
    from stages.rl.video_grpo import KEEP

    def reward(prompts, completions, id, **kw):  # group s0 all alike; s1 varies with the completion
        return [1.0 if i == "s0" else len(c[0]["content"]) / 10 for i, c in zip(id, completions)]

    rows = tg_rows(frame_files, 2)
    tr = make_trainer(tiny_model_dir, frame_files, [reward], tmp_path, rows=rows,
                      trainer_kwargs={"drop_zero_std_groups": True})
    inputs, out = rollout(tr)
    ids = [x["id"] for x in inputs]
    assert out[KEEP].tolist() == [i != "s0" for i in ids]
    assert tr._metrics["train"]["filter/dropped_frac"] == [0.5]
    _, g_filtered = loss_and_grads(tr, out)

    # the same loss computed by hand on the s1 rows only, without the filter
    idx = torch.tensor([k for k, i in enumerate(ids) if i == "s1"])
    only_s1 = {k: (v[idx] if isinstance(v, torch.Tensor) and v.ndim and v.size(0) == len(ids)
                   else [v[i] for i in idx.tolist()] if isinstance(v, list) else v)
               for k, v in out.items() if k != KEEP}
    _, g_s1 = loss_and_grads(tr, only_s1)
    assert g_filtered.keys() == g_s1.keys()
    assert all(torch.allclose(g_filtered[n], g_s1[n], atol=1e-7) for n in g_s1)
    # without the filter the zero-advantage rows only dilute the batch mean (8 rows instead of 4): half the step
    unfiltered = {k: v for k, v in out.items() if k != KEEP}
    _, g_all = loss_and_grads(tr, unfiltered)
    assert all(torch.allclose(g_all[n] * 2, g_s1[n], atol=1e-7) for n in g_s1)


def test_all_groups_flat_gives_a_zero_loss_but_still_runs_the_forward(tiny_model_dir, frame_files, tmp_path):
    def constant(prompts, completions, **kw):
        return [0.5] * len(completions)

    tr = make_trainer(tiny_model_dir, frame_files, [constant], tmp_path, rows=tg_rows(frame_files, 2),
                      trainer_kwargs={"drop_zero_std_groups": True})
    _, out = rollout(tr)
    loss, g = loss_and_grads(tr, out)
    assert loss == 0.0 and g and all(t.abs().sum() == 0 for t in g.values())


# -- T-GRPO --------------------------------------------------------------------------------------------------

NAN = float("nan")


@pytest.mark.parametrize("ordered, shuffled, expected", [
    ([1, 0, 1, 0], [1, NAN, 0, NAN], [0.3, 0, 0.3, 0]),     # 0.5 >= 0.8 x 0.5
    ([1, 0, 0, 0], [1, NAN, 1, NAN], [0, 0, 0, 0]),         # 0.25 < 0.8 x 1.0
    ([0.8, 0.8, 0.8, 0.8], [1, NAN, 1, NAN], [0.3] * 4),    # exactly 0.8 x shuffled: bonus (>=)
    ([0.1, 0.5, 0.1, 0.5], [0, NAN, 0, NAN], [0, 0.3, 0, 0.3]),  # accuracy must exceed 0.1
    ([0, 0, 0, 0], [0, NAN, 0, NAN], [0, 0, 0, 0]),         # passes the contrast, nobody is correct
    ([1, 1, 1, 1], [NAN] * 4, [0, 0, 0, 0]),                # no shuffled rollout: no contrast, no bonus
])
def test_temporal_bonus_table(ordered, shuffled, expected):
    from stages.rl.tgrpo import temporal_bonus

    got = temporal_bonus(torch.tensor([ordered], dtype=torch.float32), torch.tensor([shuffled]))
    assert torch.allclose(got, torch.tensor([expected], dtype=torch.float32))


def test_temporal_bonus_rejects_misaligned_groups():
    from stages.rl.tgrpo import accuracy_part, temporal_bonus

    with pytest.raises(ValueError):
        temporal_bonus(torch.zeros(2, 4), torch.zeros(3, 4))
    assert [accuracy_part(t) for t in ("tg", "gqa", "tracking", "qa")] == ["iou", "accuracy", "iou", "accuracy"]


def test_t_grpo_step_scores_shuffled_cached_frames_and_adds_the_bonus(tiny_model_dir, frame_files, tmp_path):
    import numpy as np
    from _multirank_worker import make_bigram_sampler  # answer-shaped rollouts, so accuracies vary
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages import tasks as T
    from stages.model.video_inputs import encode
    from stages.params import TGrpoParams
    from stages.rl.tgrpo import temporal_bonus
    from stages.video.frames import read_cached

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    make_bigram_sampler(model, AutoProcessor.from_pretrained(tiny_model_dir).tokenizer)
    rows = [{"id": f"t{i}", "task": "tg", "prompt": f"When is event {i}?", "frames": frame_files[i],
             "fps": 2.0, "solution": {"timestamps": [1.0, 5.0]}} for i in range(2)]
    tr = make_trainer(tiny_model_dir, frame_files, T.reward_functions(["tg"], think=False), tmp_path, rows=rows,
                      model=model, max_completion_length=16,
                      trainer_kwargs={"t_grpo": TGrpoParams(enabled=True), "think": False})
    for _attempt in range(8):  # sampled rollouts: repeat until one exercises a non-zero bonus
        inputs, out = rollout(tr)
        last = tr.t_grpo_last
        assert last["picks"] == [0, 2, 4, 6]  # G/2 shuffled rollouts per group of G = 4
        for k, order in zip(last["picks"], last["orders"]):
            assert sorted(order.tolist()) == list(range(8)) and order.tolist() != list(range(8))
            frames = read_cached(inputs[k]["frames"]).array  # the frame cache, reordered in memory
            want = encode(tr.processing_class, inputs[k]["prompt"], np.asarray(frames)[order], 2.0)
            got = last["rows"][last["picks"].index(k)]
            assert torch.equal(got["pixel_values_videos"], want["pixel_values_videos"])
            assert got["input_ids"] == want["input_ids"]
        # the bonus the trainer added = the pure function on accuracies recomputed here from the texts
        texts = [c[0]["content"] for c in tr._logs["completion"]]
        ordered = torch.tensor([T.score("tg", t, json.loads(x["solution"]), False)["iou"]
                                for t, x in zip(texts, inputs)])
        shuffled = torch.full((8,), NAN)
        for k, text in zip(last["picks"], last["texts"]):
            shuffled[k] = T.score("tg", text, json.loads(inputs[k]["solution"]), False)["iou"]
        want = temporal_bonus(ordered.view(2, 4), shuffled.view(2, 4)).view(-1)
        got = torch.tensor(tr._logs["rewards"]["t_grpo_bonus"])
        assert torch.allclose(got, want)
        if want.sum() > 0:
            break
    assert want.sum() > 0, ("no rollout exercised a non-zero bonus", texts, last["texts"])
    assert "t_grpo/shuffled_accuracy" in tr._metrics["train"]


# -- per-task sampling weights -------------------------------------------------------------------------------

def test_sampler_draws_tasks_in_the_weighted_proportion(tiny_model_dir, frame_files, tmp_path):
    import random

    from stages.build_samples import apply_weights

    tg = tg_rows(frame_files, 4)
    qa = [{"id": f"q{i}", "task": "qa", "prompt": "Which?", "frames": frame_files[i % 4], "fps": 2.0,
           "solution": {"answer": "A"}} for i in range(4)]
    rng = random.Random(0)
    rows = apply_weights(tg, 3.0, rng) + apply_weights(qa, 0.5, rng)  # build_samples.weights {tg: 3, qa: 0.5}
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path, rows=rows)
    draws = [tr.train_dataset[i]["task"] for i in list(tr._get_train_sampler())[::tr.num_generations]]
    assert len(draws) == 14 and draws.count("tg") == 12 and draws.count("qa") == 2


# -- guidance of groups that lost the layout ------------------------------------------------------------------

def test_lost_groups_table():
    from stages.rl.guidance import lost_groups

    nan = float("nan")
    totals = torch.tensor([0.0, 0.0, 0.0, 0.0,  # every answer scored 0: lost
                           0.0, 0.0, 0.5, 0.0,  # one answer scored: a signal, untouched
                           0.0, nan, 0.0, 0.0,  # an unscored row: not judged lost
                           1.0, 1.0, 1.0, 1.0])  # flat but scored: untouched (drop_zero_std_groups' business)
    assert lost_groups(totals, 4).tolist() == [True, False, False, False]


def test_a_group_whose_answers_all_scored_zero_gets_the_gold_answer_and_a_signal(tiny_model_dir, frame_files,
                                                                                tmp_path):
    from stages import tasks as task_registry
    from stages.rl.guidance import gold_completion_ids

    rewards = task_registry.reward_functions(["tg"], think=False)  # the random tiny model never writes the layout
    rows = tg_rows(frame_files, 2)
    plain = make_trainer(tiny_model_dir, frame_files, rewards, tmp_path / "a", rows=rows, max_completion_length=48)
    _, off = rollout(plain)
    assert off["advantages"].abs().max() == 0, "without guidance a lost group has no signal"

    tr = make_trainer(tiny_model_dir, frame_files, rewards, tmp_path / "b", rows=rows, max_completion_length=48,
                      trainer_kwargs={"guide_lost_groups": True, "think": False})
    inputs, out = rollout(tr)
    assert tr._metrics["train"]["guide/guided_frac"] == [1.0]
    tok = tr.processing_class.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids, mask = out["completion_ids"], out["completion_mask"]
    for j in range(len(inputs)):
        got = ids[j][mask[j].bool()].tolist()
        if j % 4 == 3:  # the last of each group: the gold answer in the prompt's layout, ended by <|im_end|>
            want = gold_completion_ids(tok, "tg", inputs[j]["solution"], False, end, 48)
            assert got == want and want[-1] == end
            assert "<answer>" in tok.decode(got) and out["advantages"][j] > 0
        else:  # the sampled answers stay as sampled (same seed as the run without guidance) and are pushed down
            assert got == off["completion_ids"][j][off["completion_mask"][j].bool()].tolist()
            assert out["advantages"][j] < 0


def test_guidance_leaves_groups_with_a_signal_untouched(tiny_model_dir, frame_files, tmp_path):
    rows = tg_rows(frame_files, 2)
    plain = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path / "a", rows=rows)
    _, off = rollout(plain)
    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path / "b", rows=rows,
                      trainer_kwargs={"guide_lost_groups": True})
    _, out = rollout(tr)
    assert tr._metrics["train"]["guide/guided_frac"] == [0.0]
    assert torch.equal(out["completion_ids"], off["completion_ids"])
    assert torch.equal(out["advantages"], off["advantages"])


# -- per-box credit (train.box_credit) ---------------------------------------------------------------------

BOXES = [[0.1 + 0.05 * k, 0.2, 0.4 + 0.05 * k, 0.6] for k in range(8)]


def tracking_rows(frame_files, n=2):
    return [{"id": f"t{i}", "task": "tracking", "prompt": f"Track object {i}.", "frames": frame_files[i % 4],
             "fps": 2.0, "solution": {"boxes": BOXES}} for i in range(n)]


def hand_iou(a, b):  # written out here, not the task's box_iou
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_box_credit_gives_each_box_its_own_deviation_and_the_loss_takes_it(tiny_model_dir, frame_files, tmp_path):
    from stages import tasks as task_registry

    rewards = task_registry.reward_functions(["tracking"], think=False)
    tr = make_trainer(tiny_model_dir, frame_files, rewards, tmp_path, rows=tracking_rows(frame_files), beta=0.0,
                      max_completion_length=120, trainer_kwargs={"box_credit": True, "think": False})
    batch, out = rollout(tr)  # the random model's answers: no box can be read, so no row is credited
    assert out["advantages"].shape == out["completion_ids"].shape
    assert tr._metrics["train"]["credit/rows_frac"] == [0.0]
    assert torch.equal(out["advantages"], out["advantages"][:, :1].expand_as(out["advantages"]))

    # four answers per prompt, each box shrunk about its centre by its own factor; one answer cannot be read
    def answer(scales):
        boxes = [[(b[0] + b[2]) / 2 - s * (b[2] - b[0]) / 2, (b[1] + b[3]) / 2 - s * (b[3] - b[1]) / 2,
                  (b[0] + b[2]) / 2 + s * (b[2] - b[0]) / 2, (b[1] + b[3]) / 2 + s * (b[3] - b[1]) / 2]
                 for b, s in zip(BOXES, scales)]
        return "<answer>[" + ", ".join("[" + ", ".join(f"{v:.2f}" for v in b) + "]" for b in boxes) + "]</answer>"

    scales = [[1.0] * 8, [0.5] * 4 + [1.0] * 4, [0.8, 0.6] * 4, None] * 2
    texts = [answer(s) if s else "<answer>[[0.1, 0.2]]</answer>" for s in scales]
    tok = tr.processing_class.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
    width = max(map(len, ids))
    out["completion_ids"] = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
    out["completion_mask"] = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    comps = [[{"role": "assistant", "content": t}] for t in texts]
    cols = [f(prompts=None, completions=comps, task=[r["task"] for r in batch], solution=[r["solution"] for r in batch])
            for f in tr.reward_funcs]
    tr._rewards_per_func = torch.tensor(cols, dtype=torch.float32).T
    totals = np.array(cols).sum(axis=0).reshape(2, 4)
    std = totals.std(axis=1, ddof=1) + 1e-4
    base = ((totals - totals.mean(axis=1, keepdims=True)) / std[:, None]).reshape(-1)
    out["advantages"] = torch.tensor(base, dtype=torch.float32)
    adv = tr._box_advantages(batch, out)
    assert tr._metrics["train"]["credit/rows_frac"][-1] == 0.75

    v = np.array([[hand_iou(b, g) for b, g in zip(json.loads(texts[i][8:-9]), BOXES)] if scales[i] else [0.0] * 8
                  for i in range(8)])
    for i in range(8):
        g = slice(i // 4 * 4, i // 4 * 4 + 4)
        own = (v[i] - v[g].mean(axis=0)) - (v[i].mean() - v[g].mean(axis=1).mean())
        assert abs(own.sum()) < 1e-9  # an answer's corrections cancel over its boxes
        pieces = [tok.decode([t], skip_special_tokens=True) for t in ids[i]]
        text = "".join(pieces)
        opens = [c for c, ch in enumerate(text) if ch == "["][1:]  # the boxes' brackets, after the list's own
        closes = [c for c, ch in enumerate(text) if ch == "]"][:8]
        pos, credited = 0, [0] * 8
        for t, piece in enumerate(pieces):
            chars = set(range(pos, pos + len(piece)))
            pos += len(piece)
            touched = [k for k in range(8) if chars & set(range(opens[k], closes[k] + 1))] if scales[i] else []
            want = base[i] + own[touched[0]] / std[i // 4] if len(touched) == 1 else base[i]
            if len(touched) == 1 and any(ch.isdigit() for ch in piece):
                credited[touched[0]] += 1
            assert adv[i, t].item() == pytest.approx(want, abs=1e-4), (i, t, piece)
        assert all(c >= 4 for c in credited) if scales[i] else credited == [0] * 8  # 4 coordinates (some in 2 tokens)
        assert adv[i, len(ids[i]):].sub(base[i]).abs().max().item() < 1e-5 if len(ids[i]) < width else True

    # TRL's loss takes the per-token advantages (and they change its gradient)
    out["advantages"] = adv
    _, with_credit = loss_and_grads(tr, out)
    out["advantages"] = torch.tensor(base, dtype=torch.float32)
    _, without = loss_and_grads(tr, out)
    assert any(not torch.allclose(with_credit[n], without[n]) for n in with_credit)
