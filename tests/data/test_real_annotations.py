"""The real upstream annotation files (../shared/data/annotation-samples: Charades-STA, ActivityNet-Grounding,
NExT-GQA, VideoChat-R1's GOT-10k) through the whole data plane, paired with generated videos and frame folders
of the same ids and durations: ingest -> extract_frames -> build_samples. Every annotation becomes a sample or a
quarantine record with its reason, and the counts reconcile."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.build_samples import build
from stages.datasets.annotations import video_id_of
from stages.datasets.synthetic import encode_mp4
from stages.extract_frames import extract_frames
from stages.ingest import ingest
from stages.io import read_jsonl
from stages.params import BuildSamplesParams, ExtractFramesParams, IngestParams

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "annotation-samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real annotation samples not found at {SAMPLES}")
TINY = dict(max_frames=8, min_pixels=784, max_pixels=56 * 84, total_pixels=8 * 56 * 84)


def video(path: Path, seconds: float, fps: float = 1.0) -> None:
    """A small H.264 clip of about the annotated duration (grey ramp; content does not matter here)."""
    n = max(2, round(seconds * fps))
    encode_mp4(path, (np.full((48, 64, 3), 40 + (i * 7) % 200, np.uint8) for i in range(n)), fps, 64, 48)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    videos, seqs = root / "videos", root / "got"
    durations = {}
    for name in ("charades_train_head.json", "activitynet_val2_head.json"):
        durations.update({vid: a["duration"] for vid, a in json.loads((SAMPLES / name).read_text()).items()})
    for q in json.loads((SAMPLES / "nextgqa_val_head.json").read_text()):
        durations[video_id_of(q["video"])] = q["duration"]
    for vid, seconds in durations.items():
        video(videos / f"{vid}.mp4", seconds)
    for item in json.loads((SAMPLES / "got_val_head.json").read_text()):
        seq = seqs / video_id_of(item["path"])
        seq.mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((48, 64, 3), 20 * i, np.uint8)).save(seq / f"{i + 1:08d}.jpg", quality=90)
    ingest(IngestParams(source=str(videos), frame_folders=str(seqs), out_dir=str(root / "raw"),
                        cache_dir=str(root / "cache"), progress=False))
    counts = extract_frames(ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(root / "frames"),
                                                cache_dir=str(root / "cache"), progress=False, **TINY))
    assert counts["extracted"] == len(durations) + 20 and counts["quarantined"] == 0
    return root


def run(plane: Path, out: str, **annotations) -> tuple[dict, list, list]:
    p = BuildSamplesParams(annotations={k: str(SAMPLES / v) for k, v in annotations.items()},
                           out_dir=str(plane / out), eval_fraction=0.25)
    stats = build(p, str(plane / "frames"))
    rows = read_jsonl(plane / out / "train.jsonl") + read_jsonl(plane / out / "eval.jsonl")
    return stats, rows, read_jsonl(plane / out / "quarantine.jsonl")


def test_charades_nextgqa_got_become_samples(plane):
    stats, rows, bad = run(plane, "s1", tg="charades_train_head.json", gqa="nextgqa_val_head.json",
                           tracking="got_val_head.json")
    assert not bad and stats["seen"] == 48 + 30 + 20 == len(rows)
    by_task = {t: [r for r in rows if r["task"] == t] for t in ("tg", "gqa", "tracking")}
    assert (len(by_task["tg"]), len(by_task["gqa"]), len(by_task["tracking"])) == (48, 30, 20)
    raw = json.loads((SAMPLES / "charades_train_head.json").read_text())
    for r in by_task["tg"]:  # intervals past the end of the video are clipped to it (the default policy)
        s, e = r["solution"]["timestamps"]
        assert 0 <= s < e <= raw[r["video_id"]]["duration"]
    assert all(r["num_frames"] == 8 for r in by_task["tracking"])  # one frame per box
    assert {r["video_id"] for r in by_task["tg"]} == set(raw)  # the upstream ids, every video used
    assert {r["id"] for r in by_task["gqa"]} == {q["id"] for q in json.loads((SAMPLES / "nextgqa_val_head.json").read_text())}


def test_reject_policy_and_activitynet(plane):
    stats, rows, bad = run(plane, "s2", tg="charades_train_head.json")
    assert stats["seen"] == 48 and not bad
    p = BuildSamplesParams(annotations={"tg": str(SAMPLES / "charades_train_head.json")}, out_dir=str(plane / "s3"),
                           interval_policy="reject")
    stats = build(p, str(plane / "frames"))
    bad = read_jsonl(plane / "s3" / "quarantine.jsonl")
    assert len(bad) == 8 and all("outside [0," in b["reason"] for b in bad)  # the real file's 8 overlong intervals
    assert stats["seen"] == 48 == stats["quarantined"] + stats["train_unique"] + sum(stats["eval"].values())
    stats, rows, bad = run(plane, "s4", tg="activitynet_val2_head.json")
    assert not bad and len(rows) == 73 and all(r["video_id"].startswith("v_") for r in rows)
