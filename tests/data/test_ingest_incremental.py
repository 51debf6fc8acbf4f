"""Ingest from local folders through the persistent cache: re-runs redo nothing, survive DVC deleting the out
folder, pick up new and changed files by size + mtime, and catch a corrupted cache by re-hashing."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from stages.datasets.synthetic import synthesize
from stages.ingest import ingest
from stages.io import read_jsonl, sha256_file
from stages.params import IngestParams, SynthesizeParams
from stages.sources.store import Store

SMALL = dict(num_videos=3, num_tracking_sequences=1, min_duration=2.0, max_duration=3.0, tracking_length=8)


@pytest.fixture
def syn(tmp_path):
    out = tmp_path / "syn"
    synthesize(SynthesizeParams(out_dir=str(out), **SMALL))
    return out


def params(syn, tmp_path, **kw) -> IngestParams:
    return IngestParams(**{**dict(source=str(syn / "videos"), frame_folders=str(syn / "got10k"),
                                  out_dir=str(tmp_path / "raw"), cache_dir=str(tmp_path / "cache"), progress=False),
                           **kw})


def test_rerun_after_out_deleted_redoes_nothing(syn, tmp_path):
    p = params(syn, tmp_path)
    first = ingest(p)
    files = 3 + 10  # three videos; one sequence of 8 frames, its groundtruth.txt and meta_info.ini
    assert (first["files_fetched"], first["probed"], first["ingested"]) == (files, 4, 4)
    before = (tmp_path / "raw" / "manifest.jsonl").read_text()
    summary = (tmp_path / "raw" / "summary.json").read_text()
    assert json.loads(summary) == {"seen": 4, "ingested": 4, "quarantined": 0, "videos": 3, "frame_folders": 1}
    shutil.rmtree(tmp_path / "raw")  # what DVC does before it runs the stage again
    again = ingest(p)
    assert (again["files_fetched"], again["files_cached"], again["probed"], again["probes_cached"]) == (0, files, 0, 4)
    assert (tmp_path / "raw" / "manifest.jsonl").read_text() == before
    # data/raw is what DVC hashes for extract_frames: every file in it is the same when the inputs are, although
    # the first run fetched and probed everything and this one nothing (those figures are returned, not written)
    assert (tmp_path / "raw" / "summary.json").read_text() == summary
    row = read_jsonl(tmp_path / "raw" / "manifest.jsonl")[0]
    # local files are hardlinked all the way: source, cache blob and out file are one inode (no copy, no disk)
    blob = Store(tmp_path / "cache").blob(row["sha256"])
    assert os.stat(row["path"]).st_ino == blob.stat().st_ino == os.stat(row["source"]).st_ino


def test_new_and_changed_files_are_picked_up(syn, tmp_path):
    p = params(syn, tmp_path)
    ingest(p)
    shutil.copy(syn / "videos" / "syn00001.mp4", syn / "videos" / "syn00007.mp4")  # new (same bytes as another)
    replaced = syn / "videos" / "syn00002.mp4"
    data = (syn / "videos" / "syn00003.mp4").read_bytes()
    replaced.unlink()  # a new file in its place (as editors and downloaders write), other content
    replaced.write_bytes(data)
    counts = ingest(p)
    assert counts["files_fetched"] == 2 and counts["probed"] == 0  # both hold bytes probed before
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")}
    assert rows["syn00002"]["sha256"] == sha256_file(syn / "videos" / "syn00003.mp4") == rows["syn00003"]["sha256"]
    assert rows["syn00007"]["sha256"] == rows["syn00001"]["sha256"]


@pytest.mark.parametrize("verify", [True, False])
def test_corrupted_cache_is_caught_by_rehashing(syn, tmp_path, verify):
    p = params(syn, tmp_path, link_local=False, frame_folders=None)  # copies: the cache is its own bytes
    ingest(p)
    row = read_jsonl(tmp_path / "raw" / "manifest.jsonl")[0]
    blob = Store(tmp_path / "cache").blob(row["sha256"])
    with open(blob, "r+b") as f:  # flip bytes in place: same size, same name, other content
        f.seek(100)
        f.write(b"\x00" * 16)
    counts = ingest(p.model_copy(update={"verify_cached": verify}))
    if verify:
        assert counts["files_fetched"] == 1
        assert sha256_file(tmp_path / "raw" / "videos" / "syn00001.mp4") == row["sha256"]
    else:  # trusting size + mtime is faster and does not notice
        assert counts["files_fetched"] == 0
        assert sha256_file(tmp_path / "raw" / "videos" / "syn00001.mp4") != row["sha256"]


def test_a_local_file_changed_while_hashed_costs_its_item_and_leaves_no_blob(syn, tmp_path, monkeypatch):
    """LocalSource.fetch_into hashes a file where it lies, then links it: a write in between would give the blob
    bytes its name does not say. The item is quarantined with the reason, the blob removed, the rest ingested."""
    import stages.sources.local as local

    victim = syn / "videos" / "syn00002.mp4"
    real = local.sha256_file

    def hash_then_touch(path):
        sha = real(path)
        if str(path) == str(victim):
            with open(victim, "ab") as f:
                f.write(b"\0")  # appended while it was being ingested
        return sha

    monkeypatch.setattr(local, "sha256_file", hash_then_touch)
    first = ingest(params(syn, tmp_path))
    assert (first["ingested"], first["quarantined"]) == (3, 1)
    bad = read_jsonl(tmp_path / "raw" / "quarantine.jsonl")
    assert [b["id"] for b in bad] == ["syn00002"] and "changed while it was being read" in bad[0]["reason"]
    store = Store(tmp_path / "cache")
    for blob in (tmp_path / "cache" / "blobs").glob("*/*"):
        assert sha256_file(blob) == blob.name  # every blob holds the bytes its name says
    monkeypatch.setattr(local, "sha256_file", real)
    again = ingest(params(syn, tmp_path))  # the next run takes the file as it is now
    assert (again["ingested"], again["quarantined"], again["files_fetched"]) == (4, 0, 1)
    row = next(r for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl") if r["id"] == "syn00002")
    assert row["sha256"] == sha256_file(victim) and store.blob(row["sha256"]).exists()


def test_one_index_record_per_item(syn, tmp_path):
    """A frame folder's files are recorded together: one index file per item, not per file."""
    ingest(params(syn, tmp_path))
    records = [json.loads(r.read_text()) for r in (tmp_path / "cache" / "fetched").glob("*/*.json")]
    assert len(records) == 4  # three videos and one frame folder
    assert sorted(len(r["files"]) for r in records) == [1, 1, 1, 10]  # 8 frames and 2 sidecars in one record
