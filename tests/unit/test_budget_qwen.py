"""extract_frames.budget = qwen_vl_utils gives the frames qwen-vl-utils' fetch_video gives (what VideoChat-R1 fed
its model): same frame count, frame size, sampled fps and frame indices, at the 7B recipe's settings, for every
video duration in the real annotation samples (Charades-STA, ActivityNet, NExT-GQA) and realistic source sizes.

The expected values come from qwen-vl-utils itself: fetch_video runs unchanged, with its video reader replaced by
one that decodes nothing (it calls the library's own smart_nframes, as the real readers do, and returns a
placeholder of the decoded shape) and its tensor resize replaced by one that records the size smart_resize chose.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

qvu = pytest.importorskip("qwen_vl_utils.vision_process")  # declared in the test extra (pyproject.toml)

from stages.params import ExtractFramesParams, load_params  # noqa: E402
from stages.video.budget import plan_video, uniform_indices  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "data" / "annotation-samples"
SIZES = [(240, 320), (360, 480), (480, 854), (720, 1280), (1080, 1920), (1920, 1080)]  # (h, w); last: phone
SOURCE_FPS = [24.0, 25.0, 29.97, 30.0]


def durations() -> list[float]:
    """Every distinct video duration in the annotation samples (seconds)."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real annotation samples not found at {SAMPLES}")
    found = set()
    for name in ("charades_train_head.json", "activitynet_val2_head.json"):  # {video id: {"duration", ...}}
        found |= {float(v["duration"]) for v in json.loads((SAMPLES / name).read_text()).values()}
    found |= {float(q["duration"]) for q in json.loads((SAMPLES / "nextgqa_val_head.json").read_text())}  # [{...}]
    return sorted(found)


def recipe_params() -> ExtractFramesParams:
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from apply import overrides
    finally:
        sys.path.pop(0)
    return load_params(ROOT / "params.yaml", overrides(ROOT / "recipes" / "videochat-r1-7b.yaml")).extract_frames


class _Decoded:
    """Stands for the (T, C, H, W) tensor a reader returns; never holds pixels."""

    def __init__(self, shape):
        self.shape = torch.Size(shape)

    def float(self):
        return self


def fetch_video_plan(monkeypatch, ele: dict, total_frames: int, source_fps: float, height: int, width: int):
    """(frames, height, width, sample fps, indices) as fetch_video computes them for a video of that shape."""
    seen = {}

    def reader(e):
        n = qvu.smart_nframes(e, total_frames=total_frames, video_fps=source_fps)
        seen["indices"] = torch.linspace(0, total_frames - 1, n).round().long().tolist()  # what the readers decode
        sample_fps = n / max(total_frames, 1e-6) * source_fps
        decoded = _Decoded((n, 3, height, width))
        return (decoded, {}, sample_fps) if _returns_metadata else (decoded, sample_fps)

    def resize(video, size, **kwargs):
        return _Decoded((video.shape[0], video.shape[1], *size))

    for backend in list(qvu.VIDEO_READER_BACKENDS):
        monkeypatch.setitem(qvu.VIDEO_READER_BACKENDS, backend, reader)
    monkeypatch.setattr(qvu, "transforms", types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize)))
    video, sample_fps = qvu.fetch_video(dict(ele), return_video_sample_fps=True)
    n, _, h, w = video.shape
    return n, h, w, sample_fps, seen["indices"]


# qwen-vl-utils 0.0.14's readers return (video, metadata, sample_fps); 0.0.10's (which VideoChat-R1 pinned)
# return (video, sample_fps). The arithmetic tested here is the same in both.
_returns_metadata = hasattr(qvu, "calculate_video_frame_range")


def test_recipe_selects_the_mode_and_matches_the_library_constants():
    p = recipe_params()
    assert p.budget == "qwen_vl_utils"
    video_max = getattr(qvu, "VIDEO_MAX_PIXELS", None) or qvu.VIDEO_MAX_TOKEN_NUM * p.size_factor**2
    assert (p.fps, p.min_frames, p.max_frames, p.frame_factor, p.max_pixels) == (
        qvu.FPS, qvu.FPS_MIN_FRAMES, qvu.FPS_MAX_FRAMES, qvu.FRAME_FACTOR, video_max)
    assert (p.min_pixels, p.total_pixels) == (16 * 28 * 28, 3584 * 28 * 28)  # VideoChat-R1's fetch_video call
    assert ExtractFramesParams().budget == "per_video"  # the demo keeps its frames


def test_same_frames_as_fetch_video_for_every_annotated_duration(monkeypatch):
    p = recipe_params()
    paper_call = {"video": "file:///videos/x.mp4", "total_pixels": p.total_pixels, "min_pixels": p.min_pixels}
    explicit = {**paper_call, "fps": p.fps, "min_frames": p.min_frames, "max_frames": p.max_frames,
                "max_pixels": p.max_pixels}
    checked, below_min_pixels = 0, 0
    # the annotated durations, and long videos where min_pixels wins over total_pixels
    for duration in durations() + [0.2, 1.9, 384.0, 600.0, 1000.0]:
        for fps in SOURCE_FPS:
            total = max(2, round(duration * fps))
            for height, width in SIZES:
                plan = plan_video(total / fps, total, fps, height, width, p)
                ours = (plan.num_frames, plan.height, plan.width, plan.sample_fps)
                for ele in (paper_call, explicit):
                    n, h, w, sample_fps, indices = fetch_video_plan(monkeypatch, ele, total, fps, height, width)
                    assert ours == (n, h, w, sample_fps), (duration, fps, height, width, ele)
                    if total < 17_000:  # float32 torch.linspace vs float64: see stages/video/budget.py
                        assert plan.indices == indices, (duration, fps, total, n)
                below_min_pixels += plan.height * plan.width < p.min_pixels
                checked += 1
    assert checked == (len(durations()) + 5) * len(SOURCE_FPS) * len(SIZES)
    assert below_min_pixels > 0  # qwen's smart_resize can end below min_pixels on long videos; so does the mode


@pytest.mark.parametrize(
    "duration,height,width,per_video,qwen",
    [
        (30.0, 360, 480, (60, 168, 224), (60, 252, 336)),  # the 30 s clip
        (34.9, 360, 480, (70, 168, 224), (68, 224, 308)),  # Charades-STA KBPDM: 69.8 frames -> 70 vs 68
        (30.0, 1080, 1920, (60, 140, 280), (60, 224, 392)),
    ],
)
def test_the_two_modes_differ_as_measured(duration, height, width, per_video, qwen):
    p = recipe_params()
    total = round(duration * 30.0)
    a = plan_video(total / 30.0, total, 30.0, height, width, p.model_copy(update={"budget": "per_video"}))
    b = plan_video(total / 30.0, total, 30.0, height, width, p)
    assert (a.num_frames, a.height, a.width) == per_video
    assert (b.num_frames, b.height, b.width) == qwen
    assert a.num_frames * a.height * a.width <= p.total_pixels  # per video
    assert b.num_frames // 2 * (b.height // 28) * (b.width // 28) <= p.total_pixels // 784  # visual tokens
    assert b.indices == uniform_indices(total, b.num_frames)


def test_recipe_reaches_dvc_as_an_added_key():
    """params.yaml does not list extract_frames.budget (its default applies); DVC's -S refuses a plain override of
    a missing key, so apply.py prints it with Hydra's ++."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from apply import for_dvc, overrides
    finally:
        sys.path.pop(0)
    items = overrides(ROOT / "recipes" / "videochat-r1-7b.yaml")
    listed = yaml.safe_load((ROOT / "params.yaml").read_text())["extract_frames"]
    for item, arg in zip(items, for_dvc(items, ROOT / "params.yaml")):
        key = item.partition("=")[0]
        if key.startswith("extract_frames.") and key.split(".")[1] not in listed:
            assert arg == f"++{item}"
        elif key.startswith("extract_frames."):
            assert arg == item
