"""Each distinct video of a batch goes through the vision tower once per forward (generation prefill, reference,
policy), and the loss, log-probs and gradients equal the per-row path's (every completion encoding its own copy)
to float tolerance: both families, plain, gradient checkpointing, LoRA and a frozen vision tower."""
import pytest
import torch
from test_video_grpo import length_reward, make_trainer, rollout

pytestmark = pytest.mark.filterwarnings("ignore")

def test_distinct_videos_groups_equal_blocks_by_grid_and_pixels():
    from stages.model.shared_video import distinct_videos

    a, b = torch.arange(8.0).reshape(4, 2), torch.arange(8.0).reshape(4, 2) + 1
    grid = torch.tensor([[1, 2, 2]] * 5)
    assert distinct_videos([a, b, a.clone(), b, a], grid) == ([0, 1], [0, 1, 0, 1, 0])
    # the same pixels under another grid are another video
    grid2 = torch.tensor([[1, 2, 2], [2, 1, 2]])
    assert distinct_videos([a, a], grid2) == ([0, 1], [0, 1])


def loss_logps_grads(tr, batch):
    """Loss, the policy's per-token log-probs of the batch, and every gradient, from one forward + backward."""
    from stages.rl.video_grpo import VIDEO_ROWS

    tr.model.zero_grad()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    tr._active_rows = batch[VIDEO_ROWS]
    try:
        with torch.no_grad():
            logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, mask, batch["completion_ids"].size(1))
    finally:
        tr._active_rows = None
    return loss.detach(), logps, grads


OPTIONS = {
    "plain": {},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "lora": {"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}},
    "frozen_vision": {"freeze_vision_tower": True},
}


@pytest.mark.parametrize("option", OPTIONS)
def test_shared_features_equal_the_per_row_path(option, family_model_dir, frame_files, tmp_path):
    from transformers import AutoModelForImageTextToText

    from stages.model.shared_video import TowerCounter, unshare_video_features
    from stages.params import TrainParams
    from stages.rl.policy import freeze_vision_tower, lora_config

    _, model_dir = family_model_dir
    p = TrainParams(tasks=["tg"], **OPTIONS[option])
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    if p.freeze_vision_tower:
        freeze_vision_tower(model)
    extra = {"peft_config": lora_config(p.lora)} if p.lora.enabled else {}
    tr = make_trainer(model_dir, frame_files, [length_reward], tmp_path, model=model, trainer_kwargs=extra,
                      beta=0.04, **OPTIONS[option])
    if p.gradient_checkpointing:  # Trainer.train() turns it on; this test calls compute_loss directly
        tr.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=tr.args.gradient_checkpointing_kwargs)
    counters = [TowerCounter(m) for m in {id(m): m for m in (tr.model, tr.ref_model) if m is not None}.values()]
    examples, batch = rollout(tr)  # generation prefill + reference forward (the policy's own or a second model)
    distinct = len({e["frames"] for e in examples})  # 2 prompts x G = 4; two prompts may share a clip
    assert sum(c.calls for c in counters) == 2
    assert sum(c.videos for c in counters) == 2 * distinct, [(c.calls, c.videos) for c in counters]
    for c in counters:
        c.remove()
    assert batch["advantages"].abs().sum() > 0, "need a nonzero advantage for a gradient"

    counter = TowerCounter(tr.model)
    loss, logps, grads = loss_logps_grads(tr, batch)
    assert (counter.calls, counter.videos) == (2, 2 * distinct)  # policy forward, then the log-prob forward
    counter.remove()

    unshare_video_features(tr.model)
    counter = TowerCounter(tr.model)
    loss_ref, logps_ref, grads_ref = loss_logps_grads(tr, batch)
    assert (counter.calls, counter.videos) == (2, 2 * len(examples))  # the per-row path: every completion's copy
    counter.remove()

    assert torch.allclose(loss, loss_ref, atol=1e-6, rtol=1e-5), (loss, loss_ref)
    m = batch["completion_mask"].bool()
    assert torch.allclose(logps[m], logps_ref[m], atol=1e-5), (logps[m] - logps_ref[m]).abs().max()
    assert grads.keys() == grads_ref.keys() and grads
    for n in grads:
        assert torch.allclose(grads[n], grads_ref[n], atol=1e-6, rtol=1e-4), (n, (grads[n] - grads_ref[n]).abs().max())
    visual = [n for n in grads if ".visual." in f".{n}"]
    if p.freeze_vision_tower or p.lora.enabled:  # LoRA leaves the tower out (exclude_modules)
        assert not visual
    else:
        assert visual, "the vision tower gets gradients through the shared features"


def test_reference_model_shares_too(tiny_model_dir, frame_files, tmp_path):
    """Without LoRA and with beta > 0 TRL loads a separate reference model: it is wrapped as well."""
    from stages.model.shared_video import WRAPPED, vl_core

    tr = make_trainer(tiny_model_dir, frame_files, [length_reward], tmp_path, beta=0.04)
    assert tr.ref_model is not None and getattr(vl_core(tr.ref_model), WRAPPED, False)
    assert getattr(vl_core(tr.model), WRAPPED, False)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_processes_take_the_per_row_paths_steps(engine, tiny_model_dir, frame_files, tmp_path):
    """Two CPU processes (torchrun, gloo), two GRPO steps: with shared features the ranks sample the same
    completions and log the same loss, KL and gradient norm as with every completion encoding its copy, under
    DDP and, where DeepSpeed is installed (the `test` extra), ZeRO-2 and ZeRO-3 (ZeRO-3 gathers the tower's
    weights collectively: one tower call per forward on every rank, either way)."""
    from pathlib import Path

    from test_multirank_rewards import run_worker

    options = {}
    if engine != "ddp":
        pytest.importorskip("deepspeed", reason="DeepSpeed (the `test` and `gpu` extras) is not installed")
        options["deepspeed"] = str(Path(__file__).resolve().parents[2] / "infra" / "deepspeed" / f"{engine}.json")
    shared = run_worker(tiny_model_dir, frame_files, tmp_path / "shared", **options)
    per_row = run_worker(tiny_model_dir, frame_files, tmp_path / "per_row", per_row_video=True, **options)
    for rank in (0, 1):
        assert [c["text"] for c in shared["calls"][rank]] == [c["text"] for c in per_row["calls"][rank]]
    logged = [h for h in shared["log"] if "loss" in h]
    want = [h for h in per_row["log"] if "loss" in h]
    assert len(logged) == len(want) == 2
    for got, ref in zip(logged, want):
        for name in ("loss", "kl", "grad_norm", "reward"):
            assert got[name] == pytest.approx(ref[name], rel=1e-4, abs=1e-6), (name, got["step"])
