"""extract_frames under budget qwen_vl_utils, end to end on real files: the stage writes as many frames, of the same
size, at the same sampled fps and source frames, as qwen-vl-utils' fetch_video (decord reader, unpatched) reads
from the same videos with VideoChat-R1's arguments. Pixels are not compared (the resizers differ)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.datasets.synthetic import encode_mp4
from stages.extract_frames import extract_frames
from stages.ingest import ingest
from stages.io import read_jsonl
from stages.params import ExtractFramesParams, IngestParams
from stages.video.frames import read_cached

qvu = pytest.importorskip("qwen_vl_utils.vision_process")

CLIPS = {"clip_a": (174, 10.0, 480, 360), "clip_b": (33, 10.0, 320, 240)}  # frames, fps, width, height


def test_stage_frames_equal_fetch_video(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    for name, (n, fps, w, h) in CLIPS.items():
        encode_mp4(videos / f"{name}.mp4", (np.full((h, w, 3), (30 + 5 * i) % 220, np.uint8) for i in range(n)), fps, w, h)
    ingest(IngestParams(source=str(videos), frame_folders=None, out_dir=str(tmp_path / "raw"),
                        cache_dir=str(tmp_path / "cache"), progress=False))
    p = ExtractFramesParams(budget="qwen_vl_utils", raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "frames"),
                            cache_dir=str(tmp_path / "cache"), progress=False)  # the paper's bounds are the defaults
    assert extract_frames(p)["extracted"] == len(CLIPS)
    monkeypatch.setattr(qvu, "get_video_reader_backend", lambda: "decord")
    for row in read_jsonl(tmp_path / "raw" / "manifest.jsonl"):
        frames, _, meta = read_cached(tmp_path / "frames" / f"{row['id']}.npy", row["id"])
        video, sample_fps = qvu.fetch_video({"video": row["path"], "total_pixels": p.total_pixels,
                                             "min_pixels": p.min_pixels}, return_video_sample_fps=True)
        t, _, h, w = video.shape
        assert frames.shape == (t, h, w, 3), row["id"]
        assert meta["fps"] == pytest.approx(sample_fps, abs=1e-6)  # written with 6 decimals
        assert meta["frame_indices"] == torch.linspace(0, row["frames"] - 1, t).round().long().tolist()
    a = read_cached(tmp_path / "frames" / "clip_a.npy", "clip_a").meta
    assert (a["num_frames"], a["height"], a["width"]) == (34, 336, 448)  # 17.4 s: 34.8 frames -> 34
