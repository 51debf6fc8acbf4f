"""The training benchmarks' own logic, on CPU: the loss-phase FLOPs count against torch's FLOP counter, and the
GPU benchmark's whole code path with --tiny (phases, token counts, report)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def test_loss_phase_flops_match_torchs_flop_counter(tiny_model_dir):
    """Our formula (forward = 1/3 of the count) vs FlopCounterMode on a real forward with video (eager attention
    multiplies the full L x L matrix, hence causal=False)."""
    from bench_train_common import loss_phase_flops
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages.model.video_inputs import encode, model_video_kwargs, video_message

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager")
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    frames = np.random.default_rng(0).integers(0, 255, (8, 168, 224, 3), dtype=np.uint8)
    enc = encode(processor, video_message("When is it?"), frames, 2.0)
    scored = 20
    ids = torch.tensor([enc["input_ids"] + [40] * scored])
    video = model_video_kwargs([enc], ids, model.config.video_token_id, model.config.image_token_id)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, **video, logits_to_keep=scored)
    grid = enc["video_grid_thw"][0].tolist()
    ours = loss_phase_flops(model.config, [ids.shape[1]], [scored], [grid], causal=False) / 3
    assert ours == pytest.approx(counter.get_total_flops(), rel=0.02)
    assert loss_phase_flops(model.config, [ids.shape[1]], [scored], [grid]) < 3 * ours  # causal credit


def test_gpu_benchmark_code_path_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train_gpu.py"), "--tiny", "--steps", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["steps_measured"] == 1 and r["G"] == 2
    s = r["seconds"]
    assert all(s[k] > 0 for k in ("generate", "score", "loss", "step"))
    assert sum(r["share"].values()) == pytest.approx(1.0, abs=1e-3)
    # min_new_tokens pins every completion to full length: G x prompts x tokens generated
    assert r["generate_tokens_per_s"] == pytest.approx(2 * 1 * r["completion_tokens"] / s["generate"], rel=1e-3)
    assert r["loss_flops"] > 0 and r["mfu_loss"] is None  # no GPU peak on CPU
    for phase in ("generate", "score", "loss", "optimizer"):
        assert phase in proc.stdout
