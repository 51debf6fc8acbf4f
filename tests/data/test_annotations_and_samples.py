"""Annotation adapters on the real upstream files (../shared/data/annotation-samples) and sample building:
deterministic ids, clipping of intervals that end after the video, reasons for every rejection, split by video,
per-task caps and weights, counts that reconcile."""
import json
from pathlib import Path

import numpy as np
import pytest

from stages.params import BuildSamplesParams
from stages.tasks import load_annotations

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "annotation-samples"
real = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real annotation samples not found at {SAMPLES}")


@real
def test_charades_real_file_ids_and_clipping():
    path = str(SAMPLES / "charades_train_head.json")
    clipped, rejected = load_annotations("tg", path, "clip")
    assert len(clipped) == 48 and not rejected
    assert clipped[0]["id"] == "AO8RW#0" and clipped[0]["solution"] == {"timestamps": [0.0, 6.9]}
    raw = json.loads(Path(path).read_text())
    for s in clipped:
        assert 0 <= s["solution"]["timestamps"][0] < s["solution"]["timestamps"][1] <= raw[s["video_id"]]["duration"]
    kept, rejected = load_annotations("tg", path, "reject")
    assert len(kept) + len(rejected) == 48 and len(rejected) == 8
    assert all("outside [0," in r["reason"] for r in rejected)


@pytest.mark.parametrize("policy", ["clip", "reject"])
def test_negative_start_is_rejected_under_either_policy(tmp_path, policy):
    """interval_policy is about ends after the video; a start before 0 is a broken annotation, never clipped
    silently. An end past the video is clipped under clip, rejected under reject."""
    f = tmp_path / "tg.json"
    f.write_text(json.dumps({"v": {"duration": 10.0, "timestamps": [[-0.5, 4], [1, 12], [2, 3]],
                                   "sentences": ["early", "late", "fine"]}}))
    samples, rejected = load_annotations("tg", str(f), policy)
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons["v#0"] == "interval start -0.5 is negative (before the video starts)"
    if policy == "clip":
        assert [s["solution"]["timestamps"] for s in samples] == [[1.0, 10.0], [2.0, 3.0]]
    else:
        assert reasons["v#1"] == "interval [1.0, 12.0] outside [0, 10.0]" and len(samples) == 1


@real
def test_activitynet_nextgqa_got_real_files():
    anet, rej = load_annotations("tg", str(SAMPLES / "activitynet_val2_head.json"))
    assert len(anet) == 73 and not rej and anet[0]["video_id"].startswith("v_")
    gqa, rej = load_annotations("gqa", str(SAMPLES / "nextgqa_val_head.json"))
    assert len(gqa) == 30 and not rej
    assert gqa[0]["id"] == "4882821564_1" and gqa[0]["video_id"] == "4882821564"
    assert gqa[0]["solution"] == {"answer": "C", "glue": [[13.8, 29.8]]}
    got, rej = load_annotations("tracking", str(SAMPLES / "got_val_head.json"))
    assert len(got) == 20 and not rej and got[0]["id"] == "GOT-10k_Val_000010"
    assert got[0]["problem"]["init_box"] == got[0]["solution"]["boxes"][0]


@pytest.mark.parametrize("item, reason", [
    ({"id": "x1", "video": "a.mp4", "question": "q", "options": ["(A) a", "(B) b"], "duration": 10,
      "glue": [[5, 3]], "answer": "(A)"}, "start 5.0 >= end 3.0"),
    ({"id": "x2", "video": "a.mp4", "question": "q", "options": ["(A) a", "(B) b"], "duration": 10,
      "glue": [[1, 3]], "answer": "(D)"}, "not among the option letters"),
    ({"id": "x3", "video": "a.mp4", "question": "q", "options": ["(A) a"], "duration": 10, "answer": "(A)"},
     "missing field 'glue'"),
])
def test_gqa_rejections_name_the_reason(tmp_path, item, reason):
    good = {"id": "ok", "video": "a.mp4", "question": "q", "options": ["(A) a", "(B) b"], "duration": 10,
            "glue": [[1, 3]], "answer": "(B)"}
    f = tmp_path / "g.json"
    f.write_text(json.dumps([good, item]))
    samples, rejected = load_annotations("gqa", str(f))
    assert [s["id"] for s in samples] == ["ok"]
    assert rejected[0]["id"] == item["id"] and reason in rejected[0]["reason"]


@pytest.mark.parametrize("gt, reason", [
    ([[0.1, 0.1, 0.2, 0.2]] * 7, "7 boxes, expected 8"),
    ([[0.1, 0.1, 1.2, 0.2]] * 8, "outside [0, 1]"),
    ([[0.3, 0.1, 0.2, 0.2]] * 8, "x0 >= x1"),
])
def test_got_rejections(tmp_path, gt, reason):
    f = tmp_path / "got.json"
    f.write_text(json.dumps([{"path": "x/seq_ok", "object": "o", "gt": [[0.1, 0.1, 0.2, 0.2]] * 8},
                             {"path": "x/seq_bad", "object": "o", "gt": gt}]))
    samples, rejected = load_annotations("tracking", str(f))
    assert [s["id"] for s in samples] == ["seq_ok"] and rejected[0]["id"] == "seq_bad"
    assert reason in rejected[0]["reason"]


def test_malformed_and_non_utf8_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: malformed JSON"):
        load_annotations("tg", str(bad))
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"v": {"duration": 5, "timestamps": [[0, 1]], "sentences": ["caf\xe9"]}}'.encode("latin-1"))
    with pytest.raises(ValueError, match="latin.json: not UTF-8"):
        load_annotations("tg", str(latin))


def fake_frames(d: Path, vid: str, n: int = 8, fps: float = 2.0):
    np.save(d / f"{vid}.npy", np.zeros((n, 28, 28, 3), np.uint8))
    (d / f"{vid}.json").write_text(json.dumps({"video_id": vid, "num_frames": n, "fps": fps,
                                               "timestamps": [i / fps + 0.125 for i in range(n)]}))


def test_build_splits_by_video_quarantines_and_reconciles(tmp_path):
    from stages.build_samples import build

    frames = tmp_path / "frames"
    frames.mkdir()
    vids = [f"v{i}" for i in range(8)]
    for v in vids:
        fake_frames(frames, v)
    fake_frames(frames, "seq_short", n=6)  # tracking needs one frame per box
    fake_frames(frames, "seq_ok", n=8)
    tg = {v: {"duration": 10.0, "timestamps": [[1, 4], [2, 6]], "sentences": ["a", "b"]} for v in vids}
    tg["missing_video"] = {"duration": 10.0, "timestamps": [[1, 2]], "sentences": ["c"]}
    qa = [{"id": f"q{i}", "video": f"{v}.mp4", "question": "?", "options": ["(A) x", "(B) y"], "answer": "(A)"}
          for i, v in enumerate(vids)] + [{"id": "q0", "video": "v1.mp4", "question": "?",
                                           "options": ["(A) x"], "answer": "(A)"}]
    got = [{"path": f"p/{s}", "object": "o", "gt": [[0.1, 0.1, 0.2, 0.2]] * 8} for s in ("seq_short", "seq_ok")]
    files = {}
    for name, data in (("tg", tg), ("qa", qa), ("tracking", got)):
        files[name] = str(tmp_path / f"{name}.json")
        Path(files[name]).write_text(json.dumps(data))
    p = BuildSamplesParams(annotations=files, out_dir=str(tmp_path / "samples"), eval_fraction=0.25,
                           max_per_task={"tg": 5}, weights={"qa": 2.0})
    stats = build(p, str(frames))
    out = tmp_path / "samples"
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    quarantine = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    reasons = {q["id"]: q["reason"] for q in quarantine}
    assert "missing from the frame cache" in reasons["missing_video#0"]
    assert "6 frames but 8 boxes" in reasons["seq_short"]
    assert "duplicate id (first at item 0)" in reasons["q0"]
    assert not {r["video_id"] for r in train} & {r["video_id"] for r in evals}  # split by video
    assert {r["task"] for r in evals} == {"tg", "qa"}
    assert stats["train"]["tg"] == 5 and stats["dropped_by_cap"]["tg"] == 12 - 5
    qa_train_unique = {r["id"] for r in train if r["task"] == "qa"}
    assert stats["train"]["qa"] == 2 * len(qa_train_unique)  # weight 2 doubles the qa rows
    # reconcile: every annotation read is in train, eval, quarantine or dropped by the cap
    seen = 16 + 1 + 9 + 2
    unique_train = {(r["task"], r["id"]) for r in train}
    assert stats["seen"] == seen == len(unique_train) + len(evals) + len(quarantine) + stats["dropped_by_cap"]["tg"]
    assert stats["train_unique"] == len(unique_train) and stats["quarantined"] == len(quarantine)
    for r in train + evals:
        assert r["prompt"] and Path(r["frames"]).exists() and r["fps"] == 2.0
        assert r["frame_times"] == [i / 2.0 + 0.125 for i in range(r["num_frames"])]  # the meta's, in the row


def test_annotation_duration_must_match_the_video(tmp_path):
    """An annotation whose video lasts other than the measured video (beyond max(5% of it, 1 s) by default) is
    quarantined naming the video; the rest comes through and the counts reconcile."""
    from stages.build_samples import build

    frames = tmp_path / "frames"
    frames.mkdir()
    measured = {"short_ok": 4.0, "short_bad": 4.0, "long_ok": 100.0, "long_bad": 100.0}
    said = {"short_ok": 4.9, "short_bad": 30.0, "long_ok": 104.5, "long_bad": 110.0}
    for vid, seconds in measured.items():
        np.save(frames / f"{vid}.npy", np.zeros((8, 28, 28, 3), np.uint8))
        (frames / f"{vid}.json").write_text(json.dumps(
            {"video_id": vid, "kind": "video", "num_frames": 8, "fps": 2.0, "duration": seconds}))
    tg = {v: {"duration": said[v], "timestamps": [[1, 3]], "sentences": ["a"]} for v in measured}
    (tmp_path / "tg.json").write_text(json.dumps(tg))
    p = BuildSamplesParams(annotations={"tg": str(tmp_path / "tg.json")}, out_dir=str(tmp_path / "s"),
                           eval_fraction=0.25)
    stats = build(p, str(frames))
    quarantine = [json.loads(x) for x in (tmp_path / "s" / "quarantine.jsonl").read_text().splitlines()]
    reasons = {q["id"]: q["reason"] for q in quarantine}
    assert set(reasons) == {"short_bad#0", "long_bad#0"}
    assert reasons["short_bad#0"].startswith("annotation says video 'short_bad' lasts 30 s, measured 4 s: off by "
                                             "26.00 s, more than 1.00 s (build_samples.duration_tolerance=0.05")
    assert "more than 5.00 s" in reasons["long_bad#0"]
    assert stats["seen"] == 4 == stats["quarantined"] + stats["train_unique"] + sum(stats["eval"].values())
    loose = p.model_copy(update={"duration_tolerance": 0.2, "out_dir": str(tmp_path / "s2")})
    assert build(loose, str(frames))["quarantined"] == 1  # long_bad within 20 %; short_bad still not
