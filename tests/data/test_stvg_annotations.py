"""HC-STVG annotations (stages/tasks/stvg/hcstvg.py), their binding to sampled frames, and the synthetic STVG data
(stages/tasks/stvg/synthetic.py), through the stvg task module's hooks.

fixtures/hcstvg_sample.json is hand-written in the official layout (v1 entries: caption, width, height; v2:
English, img_size), with a few bad entries and a repeated key; expected boxes are computed by hand.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from stages.datasets.synthetic import COLOURS
from stages.tasks import stvg
from stages.params import ExtractFramesParams
from stages.video.budget import plan_video

SAMPLE = Path(__file__).parent / "fixtures" / "hcstvg_sample.json"


def test_adapter_reads_v1_and_v2_and_rejects_bad_items():
    samples, rejected = stvg.load_annotations(str(SAMPLE))
    assert [s["id"] for s in samples] == ["3_ZxVk3bqYQ4A", "7_abcDEF12345"]
    v1, v2 = samples
    assert v1["task"] == "stvg" and v1["video_id"] == "3_ZxVk3bqYQ4A"
    assert v1["problem"] == {"sentence": "The man in the black coat walks to the door."}
    assert v1["solution"]["timestamps"] == [4.0, 4.12]
    # 640x360: [64, 36, 128, 72] -> [0.1, 0.1, 0.3, 0.3]; x 70 -> 0.109 -> 0.11, 198 -> 0.309 -> 0.31;
    # x 77 -> 0.120 -> 0.12, 205 -> 0.320 -> 0.32. st_frame 101 (1-based) is frame 100 counted from 0.
    assert v1["solution"]["track"] == {"start": 100, "num_frames": 500, "policy": "clip", "boxes": [
        [0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.31, 0.3], [0.12, 0.1, 0.32, 0.3]]}
    # img_size [360, 480]: [24, 18, 48, 36] -> [0.05, 0.05, 0.15, 0.15]; [460, 340, 40, 40] reaches past the frame:
    # 460/480 = 0.958 -> 0.96, 340/360 = 0.944 -> 0.94, clipped at 1
    assert v2["problem"]["sentence"] == "The woman in white turns around and sits down."
    assert v2["solution"]["track"]["start"] == 0
    assert v2["solution"]["track"]["boxes"] == [[0.0, 0.0, 0.1, 0.1], [0.05, 0.05, 0.15, 0.15], [0.96, 0.94, 1.0, 1.0]]

    reasons = {r["id"]: r["reason"] for r in rejected}
    assert len(rejected) == 6 and all(r["source"] == str(SAMPLE) for r in rejected)
    assert "run past img_num 2" in reasons["9_tubepastend"]
    assert "missing field 'English'" in reasons["10_nocaption"]
    assert "bbox 1" in reasons["11_zerowidth"] and "width or height <= 0" in reasons["11_zerowidth"]
    assert "st_time 5.0 >= ed_time 5.0" in reasons["12_emptytime"]
    assert "not an object" in reasons["13_notanobject"]
    assert "duplicate id" in reasons["3_ZxVk3bqYQ4A"]
    assert all(r["reason"].startswith(r["id"]) for r in rejected)  # each reason names its video key


def test_whole_file_not_an_object(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[]")
    samples, rejected = stvg.load_annotations(str(path))
    assert samples == [] and "JSON object keyed by video file name" in rejected[0]["reason"]
    path.write_text("{")
    with pytest.raises(ValueError, match="malformed JSON"):
        stvg.load_annotations(str(path))


def meta(indices, fps=25.0, duration=20.0, kind="video"):
    return {"video_id": "v", "kind": kind, "duration": duration, "source_fps": fps, "frame_indices": indices,
            "timestamps": [i / fps for i in indices], "num_frames": len(indices)}


def v1_sample(policy="clip"):
    samples, _ = stvg.load_annotations(str(SAMPLE), policy)
    return samples[0]  # tube: frames 100..102 (0-based), [4.0, 4.12] s at 25 fps


def test_bind_frames_picks_the_gold_box_of_each_sampled_frame():
    # frames 100, 101, 102 are at 4.00, 4.04, 4.08 s: inside [4.0, 4.12); 0 and 250 (10 s) are not
    bound = stvg.bind_frames(v1_sample(), meta([0, 100, 101, 102, 250]))
    assert bound["problem"] == {"sentence": "The man in the black coat walks to the door.", "duration": 20.0,
                                "frame_times": [0.0, 4.0, 4.04, 4.08, 10.0]}
    assert bound["solution"] == {"timestamps": [4.0, 4.12], "frame_times": [0.0, 4.0, 4.04, 4.08, 10.0],
                                 "boxes": [None, [0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.31, 0.3],
                                           [0.12, 0.1, 0.32, 0.3], None]}
    text = stvg.target_text(bound["solution"])
    assert stvg.score(text, bound["solution"], True) == {"format": 1.0, "tiou": 1.0, "viou": 1.0}


@pytest.mark.parametrize("m, message", [
    (meta([0, 250, 499]), "no sampled frame inside the interval"),
    (meta([0, 100], duration=30.0), "about 750 frames"),               # the video is not the annotated one
    (meta([0, 100], kind="frames"), "needs a video"),
    (meta([0, 100], duration=3.0, fps=166.67), "starts after the video ends"),
])
def test_bind_frames_rejects_with_a_reason(m, message):
    with pytest.raises(ValueError, match=message):
        stvg.bind_frames(v1_sample(), m)


def test_bind_frames_end_past_the_video_by_policy():
    # 103 frames at 25 fps = 4.12 s measured; make the annotation end at 4.20
    sample = v1_sample()
    sample["solution"]["timestamps"] = [4.0, 4.2]
    sample["solution"]["track"]["num_frames"] = 103
    bound = stvg.bind_frames(sample, meta([0, 100, 102], duration=4.12))
    assert bound["solution"]["timestamps"] == [4.0, 4.12]
    sample["solution"]["track"]["policy"] = "reject"
    with pytest.raises(ValueError, match="outside"):
        stvg.bind_frames(sample, meta([0, 100, 102], duration=4.12))


def test_bind_frames_rejects_times_that_disagree_with_the_tube():
    sample = v1_sample()
    sample["solution"]["timestamps"] = [4.0, 8.0]  # the tube ends at frame 102 (4.08 s)
    with pytest.raises(ValueError, match="outside the tube"):
        stvg.bind_frames(sample, meta([100, 150]))


# ---------------------------------------------------------------- synthetic data


OPTIONS = {"num_videos": 2, "duration": 4.0, "width": 128, "height": 96, "fps": 8.0}


def params(**tasks):
    return SimpleNamespace(seed=0, width=224, height=168, fps=8.0, tasks=tasks)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_videos_and_annotations(tmp_path):
    counts = stvg.synthesize(params(stvg=OPTIONS), tmp_path / "a")
    assert counts == {"stvg_videos": 2, "stvg_queries": 2}
    stvg.synthesize(params(stvg=OPTIONS), tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # deterministic, bytes included
    assert sorted(digest(tmp_path / "a")) == ["annotations/hcstvg.json", "videos/stvg00001.mp4",
                                              "videos/stvg00002.mp4"]

    samples, rejected = stvg.load_annotations(str(tmp_path / "a" / "annotations" / "hcstvg.json"))
    assert rejected == [] and [s["id"] for s in samples] == ["stvg00001", "stvg00002"]
    raw = json.loads((tmp_path / "a" / "annotations" / "hcstvg.json").read_text())
    for s in samples:
        entry, track = raw[f"{s['id']}.mp4"], s["solution"]["track"]
        name = " ".join(s["problem"]["sentence"].split()[1:3])  # "the red circle moves left" -> "red circle"
        with av.open(str(tmp_path / "a" / "videos" / f"{s['id']}.mp4")) as f:
            frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
        assert len(frames) == entry["img_num"] == 32 and frames[0].shape == (96, 128, 3)
        # the named object's colour fills the centre of its box on the tube's first and last frames
        for k in (0, len(track["boxes"]) - 1):
            x0, y0, x1, y1 = track["boxes"][k]
            pixel = frames[track["start"] + k][round((y0 + y1) / 2 * 96), round((x0 + x1) / 2 * 128)]
            assert np.abs(pixel.astype(int) - COLOURS[name.split()[0]]).max() < 40, (s["id"], k)
        # bound to the frames extract_frames samples (2 fps, at most 8), the gold answer scores 1
        plan = plan_video(4.0, entry["img_num"], 8.0, 96, 128, ExtractFramesParams(fps=2.0, max_frames=8))
        bound = stvg.bind_frames(s, {**meta(plan.indices, fps=8.0, duration=4.0), "timestamps": plan.timestamps})
        assert bound["problem"]["frame_times"] == [round(t, 2) for t in plan.timestamps]
        assert stvg.score(stvg.target_text(bound["solution"]), bound["solution"], True)["viou"] == 1.0


def test_synthetic_default_is_no_videos_and_options_are_checked(tmp_path):
    assert stvg.synthesize(params(), tmp_path) == {"stvg_videos": 0, "stvg_queries": 0}
    assert list(tmp_path.iterdir()) == []  # nothing written: the demo's synthetic data stay byte-identical
    with pytest.raises(ValueError, match="unknown options"):
        stvg.synthesize(params(stvg={"num_video": 1}), tmp_path)
    with pytest.raises(ValueError, match="objects_per_video"):
        stvg.synthesize(params(stvg={"objects_per_video": (0, 2)}), tmp_path)
