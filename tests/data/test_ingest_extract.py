"""ingest -> extract_frames on a tiny synthetic set with bad inputs mixed in: quarantine, counts, frame rules."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from stages import extract_frames as extract_stage
from stages import ingest as ingest_stage
from stages import synthesize as synthesize_stage
from stages.datasets.synthetic import synthesize
from stages.extract_frames import extract_frames
from stages.ingest import ingest
from stages.io import read_jsonl, sha256_file, write_jsonl
from stages.params import ExtractFramesParams, IngestParams, SynthesizeParams
from stages.video.budget import uniform_indices
from stages.video.decode import read_frames
from stages.video.frames import read_cached

SMALL = dict(num_videos=3, num_tracking_sequences=2, min_duration=2.0, max_duration=4.0, tracking_length=10)
TINY = dict(max_frames=8, min_pixels=3136, max_pixels=112 * 84)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A synthetic set plus a zero-byte video, a text file named .mp4, a duplicate id and an empty frame folder."""
    root = tmp_path_factory.mktemp("ingest")
    syn = root / "syn"
    synthesize(SynthesizeParams(out_dir=str(syn), **SMALL))
    (syn / "videos" / "empty.mp4").write_bytes(b"")
    (syn / "videos" / "notes.mp4").write_text("this is not a video\n")
    (syn / "videos" / "z_dup").mkdir()  # sorts after the original, which wins
    shutil.copy(syn / "videos" / "syn00002.mp4", syn / "videos" / "z_dup" / "syn00002.mp4")
    (syn / "videos" / "readme.txt").write_text("not a video suffix: not a candidate")
    (syn / "got10k" / "GOT-10k_Syn_empty").mkdir()
    p = IngestParams(source=str(syn / "videos"), frame_folders=str(syn / "got10k"), out_dir=str(root / "raw"),
                     cache_dir=str(root / "cache"), progress=False)
    return root, ingest(p)


def test_counts_reconcile(raw):
    root, counts = raw
    assert {k: counts[k] for k in ("seen", "ingested", "quarantined", "videos", "frame_folders")} == {
        "seen": 9, "ingested": 5, "quarantined": 4, "videos": 3, "frame_folders": 2}
    # zero-byte and duplicate items are rejected from the listing: only the other 6 items were fetched and probed
    assert counts["probed"] == 6 and counts["files_cached"] == 0
    assert len(read_jsonl(root / "raw" / "manifest.jsonl")) + len(read_jsonl(root / "raw" / "quarantine.jsonl")) == 9


def test_quarantine_reasons(raw):
    root, _ = raw
    bad = {r["id"]: r for r in read_jsonl(root / "raw" / "quarantine.jsonl")}
    assert set(bad) == {"empty", "notes", "syn00002", "GOT-10k_Syn_empty"}
    assert bad["empty"]["reason"] == "zero-byte file"
    assert bad["notes"]["reason"].startswith("not a decodable video")
    assert bad["syn00002"]["reason"].startswith("duplicate id: first listed at") and bad["syn00002"]["source"].endswith("z_dup/syn00002.mp4")
    assert "no JPEG frames" in bad["GOT-10k_Syn_empty"]["reason"]
    assert all(r["stage"] == "ingest" and r["source"] for r in bad.values())


def test_manifest_rows(raw):
    root, _ = raw
    rows = {r["id"]: r for r in read_jsonl(root / "raw" / "manifest.jsonl")}
    assert set(rows) == {"syn00001", "syn00002", "syn00003", "GOT-10k_Syn_000001", "GOT-10k_Syn_000002"}
    keys = {"id", "source", "path", "kind", "sha256", "bytes", "duration", "fps", "frames", "width", "height", "codec",
            "start", "rotation", "cfr"}
    for r in rows.values():
        assert set(r) == keys
        assert r["path"].startswith(str(root / "raw")) and (root / "raw").exists()
    v = rows["syn00001"]
    assert v["kind"] == "video" and v["codec"] == "h264" and v["fps"] == 8.0 and v["path"].endswith("videos/syn00001.mp4")
    assert v["sha256"] == sha256_file(v["path"]) == sha256_file(v["source"]) and v["bytes"] > 0
    assert v["duration"] == v["frames"] / v["fps"]
    assert v["start"] == 0.0 and v["rotation"] == 0 and v["cfr"] is True  # synthetic: constant rate, upright
    f = rows["GOT-10k_Syn_000001"]
    assert f["kind"] == "frames" and f["codec"] == "jpeg" and f["frames"] == 10 and f["fps"] == 10.0
    names = sorted(p.name for p in (root / "raw" / "frames_src" / f["id"]).iterdir())
    assert names == [f"{i:08d}.jpg" for i in range(1, 11)] + ["groundtruth.txt", "meta_info.ini"]  # sidecars too


@pytest.mark.parametrize("budget", [TINY, {}], ids=["tiny", "paper"])
def test_extract_frames_rules(raw, budget, tmp_path):
    root, _ = raw
    p = ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path / "frames"), cache_dir=str(tmp_path / "c"),
                            progress=False, **budget)
    counts = extract_frames(p)
    assert counts["seen"] == counts["extracted"] == 5 and counts["quarantined"] == 0
    index = {r["id"]: r for r in read_jsonl(tmp_path / "frames" / "index.jsonl")}
    manifest = {r["id"]: r for r in read_jsonl(root / "raw" / "manifest.jsonl")}
    assert set(index) == set(manifest)
    for vid, row in manifest.items():
        frames, _, meta = read_cached(tmp_path / "frames" / f"{vid}.npy", vid)
        t, h, w = meta["num_frames"], meta["height"], meta["width"]
        assert frames.shape == (t, h, w, 3) and frames.dtype == np.uint8
        assert h % 28 == 0 and w % 28 == 0 and p.min_pixels <= h * w <= p.max_pixels and t * h * w <= p.total_pixels
        assert t % 2 == 0 and len(meta["timestamps"]) == len(meta["frame_indices"]) == t
        assert meta["timestamps"] == [round(i / row["fps"], 6) for i in meta["frame_indices"]]
        assert meta["sha256"] == row["sha256"] and meta["fps"] == pytest.approx(t / row["duration"], abs=1e-5)
        if row["kind"] == "frames":
            assert meta["frame_indices"] == uniform_indices(row["frames"], p.tracking_frames)
        else:
            want = min(max(round(row["duration"] * p.fps), p.min_frames), p.max_frames, row["frames"])
            assert want - 1 <= t <= want and meta["frame_indices"] == uniform_indices(row["frames"], t)
        assert index[vid]["cache_key"] == meta["cache_key"]
    if budget == TINY:
        assert frames.shape[1:3] == (84, 112)  # 168x224 source halved


def test_extracted_frames_are_the_decoded_frames(raw, tmp_path):
    root, _ = raw
    row = next(r for r in read_jsonl(root / "raw" / "manifest.jsonl") if r["id"] == "syn00003")
    extract_frames(ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path), min_pixels=3136,
                                       cache_dir=str(tmp_path / "c"), progress=False))
    frames, _, meta = read_cached(tmp_path / "syn00003.npy", "syn00003", mmap=False)
    assert (meta["height"], meta["width"]) == (168, 224)  # on the grid already: no resize
    assert np.array_equal(frames, read_frames(row["path"], meta["frame_indices"], backend="pyav"))


def test_extract_quarantines_and_reuses(raw, tmp_path):
    root, _ = raw
    rows = read_jsonl(root / "raw" / "manifest.jsonl")
    broken = dict(rows[0], id="gone", path=str(tmp_path / "gone.mp4"))
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(open(rows[0]["path"], "rb").read()[:300])
    trunc = dict(rows[0], id="trunc", path=str(truncated), sha256=sha256_file(truncated))
    write_jsonl(tmp_path / "raw" / "manifest.jsonl", rows + [broken, trunc])
    p = ExtractFramesParams(raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "frames"), workers=2,
                            cache_dir=str(tmp_path / "c"), progress=False, **TINY)
    counts = extract_frames(p)
    assert counts["seen"] == 7 and counts["extracted"] == 5 and counts["quarantined"] == 2
    bad = {r["id"]: r for r in read_jsonl(tmp_path / "frames" / "quarantine.jsonl")}
    assert set(bad) == {"gone", "trunc"} and all(r["reason"] and r["stage"] == "extract_frames" for r in bad.values())
    assert "missing" in bad["gone"]["reason"] and "DecodeError" in bad["trunc"]["reason"]
    assert not (tmp_path / "frames" / "gone.npy").exists()
    again = extract_frames(p.model_copy(update={"workers": 1}))
    assert again["reused"] == 5 and again["decoded"] == 0


def test_budget_change_recomputes_only_what_it_changes(raw, tmp_path):
    """The frame cache is keyed by (video sha256, frame plan): max_frames 8 -> 4 re-decodes the three videos
    (their plans change) but not the two tracking folders (always tracking_frames frames); back to 8 decodes
    nothing; and a run after the out folder was deleted (what DVC does before re-running) decodes nothing."""
    root, _ = raw
    p = ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path / "frames"), cache_dir=str(tmp_path / "c"),
                            progress=False, **TINY)
    first = extract_frames(p)
    assert (first["decoded"], first["reused"]) == (5, 0)
    fewer = extract_frames(p.model_copy(update={"max_frames": 4}))
    assert (fewer["decoded"], fewer["reused"]) == (3, 2)
    assert read_cached(tmp_path / "frames" / "syn00001.npy", "syn00001").array.shape[0] == 4
    back = extract_frames(p)
    assert (back["decoded"], back["reused"]) == (0, 5)
    shutil.rmtree(tmp_path / "frames")
    again = extract_frames(p)
    assert (again["decoded"], again["reused"]) == (0, 5)
    frames, _, meta = read_cached(tmp_path / "frames" / "syn00001.npy", "syn00001", mmap=False)
    # the out file is a hardlink of the cache entry: re-making the out folder copies nothing
    entry = tmp_path / "c" / "frames" / meta["cache_key"][:2] / f"{meta['cache_key']}.npy"
    assert (tmp_path / "frames" / "syn00001.npy").stat().st_ino == entry.stat().st_ino


def test_corrupted_frame_cache_entry_is_decoded_again(raw, tmp_path, capsys):
    """Bytes of a cache entry changed in place, size unchanged (a bad disk; an edit through the hardlink in
    data/frames): its content hash no longer matches, so the entry is decoded again, counted and named on stderr;
    an entry without its stored hash (a run killed between the two writes) is not trusted either."""
    root, _ = raw
    p = ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path / "frames"), cache_dir=str(tmp_path / "c"),
                            progress=False, **TINY)
    extract_frames(p)
    good, _, meta = read_cached(tmp_path / "frames" / "syn00001.npy", "syn00001", mmap=False)
    entry = tmp_path / "c" / "frames" / meta["cache_key"][:2] / f"{meta['cache_key']}.npy"
    size = entry.stat().st_size
    with open(tmp_path / "frames" / "syn00001.npy", "r+b") as f:  # the out file is a hardlink of the entry
        f.seek(size - 100)
        f.write(bytes(100))  # black pixels: same size, same header, same shape
    assert entry.stat().st_size == size and not np.array_equal(np.load(entry), good)
    capsys.readouterr()
    counts = extract_frames(p)
    assert (counts["decoded"], counts["reused"], counts["redecoded"]) == (1, 4, 1)
    err = capsys.readouterr().err
    assert "1 cached frame entries failed their content check" in err
    assert "syn00001: cached frames corrupted: sha256" in err
    assert np.array_equal(read_cached(tmp_path / "frames" / "syn00001.npy", "syn00001", mmap=False).array, good)
    assert np.array_equal(np.load(entry), good)
    assert extract_frames(p)["redecoded"] == 0  # repaired for good
    (entry.parent / f"{entry.name}.sha256").unlink()
    counts = extract_frames(p)
    assert (counts["decoded"], counts["redecoded"]) == (1, 1)
    assert "syn00001: no content hash stored" in capsys.readouterr().err


def test_truncated_frames_file_names_file_and_sample(raw, tmp_path):
    """A data/frames file cut short failed training with numpy's bare "mmap length is greater than file size":
    the error now names the file and the sample, where training, evaluation and SFT load frames."""
    from stages.model.video_inputs import sample_frames
    from stages.sft import encode_example
    from stages.video.frames import FramesError

    root, _ = raw
    p = ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path / "frames"), cache_dir=str(tmp_path / "c"),
                            progress=False, **TINY)
    extract_frames(p)
    path = tmp_path / "frames" / "syn00002.npy"
    assert np.load(path, mmap_mode="r").ndim == 4
    data = path.read_bytes()
    path.unlink()  # a new file: the cache entry it was a hardlink of stays intact
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FramesError, match=rf"^sample 'syn00002#0': frames file {path} unusable \(ValueError: mmap "
                                          r"length is greater than file size\); run extract_frames again"):
        sample_frames({"id": "syn00002#0", "frames": str(path)})
    row = {"id": "syn00002#1", "task": "tg", "prompt": "When?", "frames": str(path), "fps": 2.0, "solution": {}}
    with pytest.raises(FramesError, match=rf"sample 'syn00002#1': frames file {path} unusable"):
        encode_example(None, row, think=False)  # the frames are loaded before the processor is used
    with pytest.raises(ValueError, match=rf"syn00002: frames file {path} unusable \(ValueError: mmap length"):
        read_cached(tmp_path / "frames" / "syn00002.npy", "syn00002")
    path.unlink()
    with pytest.raises(FramesError, match=rf"sample 'syn00002#0': frames file {path} unusable \(FileNotFoundError"):
        sample_frames({"id": "syn00002#0", "frames": str(path)})


def test_parallel_extraction_matches_serial(raw, tmp_path):
    root, _ = raw
    p = ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(tmp_path / "one"), cache_dir=str(tmp_path / "c1"),
                            progress=False, **TINY)
    extract_frames(p)
    extract_frames(p.model_copy(update={"workers": 2, "out_dir": str(tmp_path / "two"), "cache_dir": str(tmp_path / "c2")}))
    for row in read_jsonl(root / "raw" / "manifest.jsonl"):
        a, _, ma = read_cached(tmp_path / "one" / f"{row['id']}.npy", row["id"], mmap=False)
        b, _, mb = read_cached(tmp_path / "two" / f"{row['id']}.npy", row["id"], mmap=False)
        assert np.array_equal(a, b) and ma == mb


def test_stage_mains_chain_through_params_yaml(tmp_path, monkeypatch, capsys):
    """python -m stages.<stage> reads params.yaml from the repo root (here: cwd) and writes relative paths."""
    monkeypatch.chdir(tmp_path)
    params = {"synthesize": dict(SMALL, num_videos=2, num_tracking_sequences=1), "extract_frames": TINY}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    synthesize_stage.main()
    ingest_stage.main()
    extract_stage.main()
    out = capsys.readouterr().out
    assert '"ingested": 3' in out and '"extracted": 3' in out
    rows = read_jsonl("data/raw/manifest.jsonl")
    assert rows[0]["path"] == "data/raw/videos/syn00001.mp4"
    assert read_cached("data/frames/GOT-10k_Syn_000001.npy").array.shape == (8, 84, 112, 3)
