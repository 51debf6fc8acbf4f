"""Ingest from s3://bucket/prefix against a real S3-compatible server over HTTP (moto server on 127.0.0.1):
paginated listing, the same manifest as from local folders, incremental re-runs (only new or changed objects are
fetched), a run killed mid-way and started again, and credentials that never reach a file or the output."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.datasets.synthetic import synthesize
from stages.ingest import ingest
from stages.io import read_jsonl
from stages.params import IngestParams, SynthesizeParams
from stages.sources import RemoteFile, open_source
from stages.sources.s3 import parse_s3_uri

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_videos=3, num_tracking_sequences=2, min_duration=2.0, max_duration=3.0, tracking_length=10)
FACTS = ("id", "kind", "sha256", "bytes", "duration", "fps", "frames", "width", "height", "codec")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    synthesize(SynthesizeParams(out_dir=str(out), **SMALL))
    return out


def upload_tree(client, bucket: str, local: Path, prefix: str) -> int:
    n = 0
    for p in sorted(local.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(local).as_posix()}", Body=p.read_bytes())
            n += 1
    return n


def s3_params(bucket: str, endpoint: str, tmp: Path, **kw) -> IngestParams:
    base = dict(source=f"s3://{bucket}/videos", frame_folders=f"s3://{bucket}/got10k", out_dir=str(tmp / "raw"),
                cache_dir=str(tmp / "cache"), s3_endpoint_url=endpoint, progress=False)
    return IngestParams(**{**base, **kw})


def facts(manifest: Path) -> list[tuple]:
    return [tuple(r[k] for k in FACTS) for r in read_jsonl(manifest)]


def test_parse_s3_uri():
    assert parse_s3_uri("s3://b/videos") == ("b", "videos/")
    assert parse_s3_uri("s3://b/a/b/") == ("b", "a/b/")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(ValueError, match="no bucket"):
        parse_s3_uri("s3:///x")


def test_listing_is_paginated(bucket, s3_endpoint, syn):
    name, client = bucket
    upload_tree(client, name, syn / "videos", "videos")
    upload_tree(client, name, syn / "videos", "videos/nested")  # videos below sub-folders count too (same ids)
    src = open_source(f"s3://{name}/videos", endpoint_url=s3_endpoint, page_size=2)
    pages = []
    src.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: pages.append(1))
    items = list(src.videos([".mp4"]))
    assert len(items) == 6 and len(pages) == 3  # 6 keys, 2 per page
    assert [i.id for i in items] == ["syn00001", "syn00002", "syn00003"] * 2
    assert items[0].source == f"s3://{name}/videos/nested/syn00001.mp4"  # key order: "nested/" < "syn..."
    assert all(i.files[0].version and i.files[0].size > 0 for i in items)


def test_s3_ingest_matches_local_and_is_incremental(bucket, s3_endpoint, syn, tmp_path):
    name, client = bucket
    upload_tree(client, name, syn / "videos", "videos")
    n_seq = upload_tree(client, name, syn / "got10k", "got10k")
    local = ingest(IngestParams(source=str(syn / "videos"), frame_folders=str(syn / "got10k"),
                                out_dir=str(tmp_path / "local"), cache_dir=str(tmp_path / "lc"), progress=False))
    p = s3_params(name, s3_endpoint, tmp_path, s3_page_size=3)
    first = ingest(p)
    assert first["ingested"] == local["ingested"] == 5 and first["quarantined"] == 0
    assert first["files_fetched"] == 3 + n_seq and first["files_cached"] == 0
    assert facts(tmp_path / "raw" / "manifest.jsonl") == facts(tmp_path / "local" / "manifest.jsonl")
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")}
    assert rows["syn00001"]["source"] == f"s3://{name}/videos/syn00001.mp4"
    assert rows["GOT-10k_Syn_000001"]["source"] == f"s3://{name}/got10k/GOT-10k_Syn_000001/"
    assert (Path(rows["GOT-10k_Syn_000001"]["path"]) / "groundtruth.txt").is_file()

    second = ingest(p)  # nothing changed: nothing fetched, nothing probed
    assert (second["files_fetched"], second["files_cached"], second["probed"]) == (0, 3 + n_seq, 0)

    # one object rewritten with other content (new ETag), one new object, one deleted
    client.put_object(Bucket=name, Key="videos/syn00001.mp4", Body=(syn / "videos" / "syn00002.mp4").read_bytes())
    client.put_object(Bucket=name, Key="videos/extra/syn00009.mp4", Body=(syn / "videos" / "syn00003.mp4").read_bytes())
    client.delete_object(Bucket=name, Key="videos/syn00003.mp4")
    third = ingest(p)
    assert (third["files_fetched"], third["files_cached"]) == (2, 1 + n_seq)
    assert third["probed"] == 0  # both new objects hold bytes already probed (content-keyed verdicts)
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")}
    assert set(rows) == {"syn00001", "syn00002", "syn00009", "GOT-10k_Syn_000001", "GOT-10k_Syn_000002"}
    assert rows["syn00001"]["sha256"] == rows["syn00002"]["sha256"]


def test_credentials_never_reach_files_or_output(bucket, s3_endpoint, syn, tmp_path, capfd):
    name, client = bucket
    upload_tree(client, name, syn / "videos", "videos")
    client.put_object(Bucket=name, Key="videos/broken.mp4", Body=b"not a video")
    p = s3_params(name, s3_endpoint, tmp_path, frame_folders=None, progress=True)
    counts = ingest(p)
    assert counts["ingested"] == 3 and counts["quarantined"] == 1
    secret, key_id = os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]
    out, err = capfd.readouterr()
    assert secret not in out + err and key_id not in out + err
    for f in list((tmp_path / "raw").rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            assert secret.encode() not in data and key_id.encode() not in data, f
    assert "secret" not in " ".join(IngestParams.model_fields)  # no parameter could even hold one


def test_killed_run_resumes_without_refetching(bucket, s3_endpoint, syn, tmp_path, monkeypatch):
    """SIGKILL `python -m stages.ingest` in the middle of its downloads, run again: the files it had completed are
    not fetched again, and the result is the same as a clean run's."""
    name, client = bucket
    total = 0
    for copy in range(20):  # 60 objects, so the kill lands mid-way
        for p in sorted((syn / "videos").iterdir()):
            client.put_object(Bucket=name, Key=f"videos/c{copy:02d}_{p.name}", Body=p.read_bytes())
            total += 1
    ws = tmp_path / "ws"
    ws.mkdir()
    params = {"ingest": dict(source=f"s3://{name}/videos", frame_folders=None, out_dir="data/raw",
                             cache_dir=".cache/videorft", s3_endpoint_url=s3_endpoint, workers=1, progress=False)}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "stages.ingest"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fetched = ws / ".cache" / "videorft" / "fetched"
    deadline = time.monotonic() + 120
    while len(list(fetched.glob("*/*.json"))) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (ws / "data" / "raw" / "manifest.jsonl").exists()
    complete = len(list(fetched.glob("*/*.json")))
    assert 10 <= complete < total

    monkeypatch.chdir(ws)  # the stage's paths are relative to the workspace, as under dvc
    resumed = ingest(IngestParams(**params["ingest"]))
    assert resumed["files_cached"] == complete and resumed["files_fetched"] == total - complete
    assert resumed["ingested"] == total
    clean = ingest(s3_params(name, s3_endpoint, tmp_path / "clean", frame_folders=None))
    assert facts(ws / "data" / "raw" / "manifest.jsonl") == facts(tmp_path / "clean" / "raw" / "manifest.jsonl")
    assert not list((ws / ".cache" / "videorft").rglob("*.tmp"))  # the killed run's partial download was swept


def test_multipart_objects_are_fetched_without_an_md5_etag(bucket, s3_endpoint, tmp_path):
    """A multipart upload's ETag ("<md5 of md5s>-<parts>") is not the body's MD5: it must not be checked as one."""
    from stages.sources.s3 import etag_is_md5

    name, client = bucket
    parts = [b"a" * (5 << 20), b"b" * 1000]  # S3's smallest non-last part is 5 MiB
    up = client.create_multipart_upload(Bucket=name, Key="big/blob.bin")
    etags = [client.upload_part(Bucket=name, Key="big/blob.bin", UploadId=up["UploadId"], PartNumber=i + 1,
                                Body=body)["ETag"] for i, body in enumerate(parts)]
    client.complete_multipart_upload(Bucket=name, Key="big/blob.bin", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    src = open_source(f"s3://{name}/big", endpoint_url=s3_endpoint)
    head = client.head_object(Bucket=name, Key="big/blob.bin")
    remote = RemoteFile(f"s3://{name}/big/blob.bin", "blob.bin", head["ContentLength"], head["ETag"].strip('"'))
    size, version = src.fetch(remote, tmp_path / "blob")
    assert size == sum(map(len, parts)) == (tmp_path / "blob").stat().st_size and version.endswith("-2")
    assert not etag_is_md5({}, version) and etag_is_md5({}, "0" * 32)
    assert not etag_is_md5({"ServerSideEncryption": "aws:kms"}, "0" * 32)
    assert not etag_is_md5({"SSECustomerAlgorithm": "AES256"}, "0" * 32)
