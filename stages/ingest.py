"""Stage ingest: bring videos and JPEG frame folders into out_dir with a manifest; quarantine what is unusable.

Sources (stages.sources): a local folder or s3://bucket/prefix for videos, and the same for frame folders
(GOT-10k sequences, one sub-folder each). Writes (the whole out_dir is one DVC out):
- videos/<id><suffix>      hardlink of the cached file
- frames_src/<id>/*.jpg     the same for frame folders, with their sidecar files (groundtruth.txt, meta_info.ini ...)
- manifest.jsonl            one row per ingested item: id, source, path (under out_dir; relative to the repo root
                            when out_dir is), kind (video | frames), sha256 (of the file; for a frame folder of its
                            frame names and hashes), bytes, duration, fps, frames, width, height, codec
- quarantine.jsonl          one stages.io.quarantine_record per rejected item; ingested + quarantined = seen
- summary.json              seen, ingested, quarantined, videos, frame_folders: the same on every run of the same
                            inputs (the run's own figures, files fetched or cached and so on, are only printed)

How a run goes: list every item; reject duplicates and empty items at once (nothing fetched); fetch each file that
the cache (stages.sources.store) does not already hold at the same size and ETag/mtime, in parallel threads;
probe each item once per content (the verdict is memoised by sha256, so a re-run does not decode again); then
re-make out_dir from the cache by hardlinks and write the manifest last. A run killed anywhere keeps every file it
had completely fetched; the next run fetches the rest and ends with the same out_dir.

Ids: a video's file stem, a frame folder's name. The first item (in sorted listing order, videos first) with an
id wins; later ones are quarantined as duplicates.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from stages.io import quarantine_record, sha256_json, write_json, write_jsonl
from stages.params import IngestParams, load_params
from stages.sources import Item, ItemError, RemoteFile, Source, open_source, unsafe_id
from stages.sources.store import Store, cache_root
from stages.video.decode import DecodeError, probe_frame_files, probe_video, read_frames

STAGE = "ingest"
PROBE_VERSION = 3  # bump when probing rules change: memoised verdicts of older rules are then ignored


@dataclass
class Result:
    """What became of one item: manifest facts or the reason it was rejected, and the blobs of its files."""

    item: Item
    reason: str | None = None
    facts: dict | None = None
    blobs: dict[str, str] = field(default_factory=dict)  # file name -> sha256 (frames and sidecars)


# ---------------------------------------------------------------- listing


def sources(p: IngestParams) -> list[tuple[Source, Item]]:
    """Every candidate item with the source it comes from: videos first, then frame folders, each in listing order."""
    opts = dict(endpoint_url=p.s3_endpoint_url, profile=p.s3_profile, max_attempts=p.s3_max_attempts,
                page_size=p.s3_page_size, pool=p.workers, link_local=p.link_local)
    src = open_source(p.source, **opts)
    pairs = [(src, item) for item in src.videos(p.extensions)]
    if p.frame_folders:
        folders = open_source(p.frame_folders, **opts)
        pairs += [(folders, item) for item in folders.frame_folders(p.frame_folder_sidecars)]
    return pairs


def screen(pairs: list[tuple[Source, Item]]) -> list[Result]:
    """Reasons visible in the listing alone; nothing is fetched for these. The first listed item with an id wins;
    an item the source flagged (symlink out of a local root, '.'/'..' in an S3 key) or whose id is no plain name
    claims no id, so a good item of the same id still comes through."""
    results, first_source = [], {}
    for _, item in pairs:
        r = Result(item)
        if problem := item.problem or unsafe_id(item.id):
            r.reason = problem
            results.append(r)
            continue
        if item.id in first_source:
            r.reason = f"duplicate id: first listed at {first_source[item.id]}"
        elif item.kind == "video" and item.files[0].size == 0:
            r.reason = "zero-byte file"
        elif item.kind == "frames" and not item.files:
            r.reason = "frame folder has no JPEG frames"
        elif item.kind == "frames" and any(f.size == 0 for f in item.files):
            r.reason = f"frame folder has zero-byte frames: {', '.join(f.name for f in item.files if f.size == 0)[:200]}"
        first_source.setdefault(item.id, item.source)
        results.append(r)
    return results


# ---------------------------------------------------------------- fetching


def fetch_all(pairs: list[tuple[Source, Item]], store: Store, p: IngestParams) -> tuple[dict[str, str | Exception], dict]:
    """uri -> sha256 (or the ItemError) for every file of every item, files in threads: a file the cache holds at
    the same size and version is only verified (re-hashed when verify_cached), any other is fetched into the cache
    (a local source's file is hashed in place and hardlinked: `fetch_into`). Each item's record is written once,
    when its last file is done (a run killed inside a frame folder fetches that folder's files again)."""

    def one(src: Source, f: RemoteFile, entry: dict | None) -> tuple[str, dict, bool]:
        sha = store.intact(entry, f.size, f.version, p.verify_cached)
        if sha is not None:
            return sha, entry, False
        if hasattr(src, "fetch_into"):
            sha, size, version = src.fetch_into(f, store)
        else:
            sha, size, version = store.put(lambda tmp: src.fetch(f, tmp))
        return sha, {"size": size, "version": version, "sha256": sha}, True

    done: dict[str, str | Exception] = {}
    stats = {"files_cached": 0, "files_fetched": 0, "bytes_fetched": 0}
    known: dict[str, dict] = {}  # item source -> its record as found
    keep: dict[str, dict] = {}  # item source -> its record as it will be written
    left: dict[str, int] = {}  # item source -> files not done yet
    total = sum(f.size for _, item in pairs for f in item.files + item.sidecars)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest: files", disable=not p.progress or not total)
    with bar, cf.ThreadPoolExecutor(max(1, p.workers)) as pool:
        futures = {}
        for src, item in pairs:
            files = item.files + item.sidecars
            known[item.source], keep[item.source], left[item.source] = store.fetched(item.source), {}, len(files)
            for f in files:
                futures[pool.submit(one, src, f, known[item.source].get(f.uri))] = (item.source, f)
        for fut in cf.as_completed(futures):
            source, f = futures[fut]
            try:
                done[f.uri], keep[source][f.uri], fetched = fut.result()
                stats["files_fetched" if fetched else "files_cached"] += 1
                stats["bytes_fetched"] += f.size if fetched else 0
            except ItemError as e:
                done[f.uri] = e
            left[source] -= 1
            if not left[source] and keep[source] != known[source]:
                store.record(source, keep[source])
            bar.update(f.size)
    return done, stats


# ---------------------------------------------------------------- probing


def tree_hash(frames: list[tuple[str, str]]) -> str:
    """One hash for a frame folder: the names and contents of its frames, in order."""
    h = hashlib.sha256()
    for name, sha in frames:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def probe_video_blob(blob: Path) -> dict:
    info = probe_video(blob)  # also catches truncation (fewer packets than the header declares)
    read_frames(blob, [0], backend="pyav")  # the codec really decodes
    return info.as_dict()


def probe(item: Item, blobs: dict[str, str], store: Store, p: IngestParams) -> tuple[dict | None, str | None, bool]:
    """(facts, None) or (None, reason), memoised by content; the flag says whether it came from the cache."""
    if item.kind == "video":
        sha = blobs[item.files[0].name]
        key = sha256_json(["video", PROBE_VERSION, sha])
        size = item.files[0].size
    else:
        sha = tree_hash([(f.name, blobs[f.name]) for f in item.files])
        key = sha256_json(["frames", PROBE_VERSION, sha, p.frame_folder_fps])
        size = sum(f.size for f in item.files)
    names = {str(store.blob(blobs[f.name])): f.uri for f in item.files}  # cache paths -> what the user knows
    memo = store.memo_get("probes", key)
    if memo is not None:
        return memo.get("facts"), _named(memo.get("reason"), names), True
    try:
        if item.kind == "video":
            info = probe_video_blob(store.blob(sha))
        else:
            paths = [store.blob(blobs[f.name]) for f in item.files]  # identical frames share one blob
            info = probe_frame_files(paths, [f.name for f in item.files], p.frame_folder_fps)
            info = info.as_dict()
        verdict = {"facts": {"sha256": sha, "bytes": size, **info}}
    except DecodeError as e:
        what = "not a decodable video" if item.kind == "video" else "unreadable frames"
        verdict = {"reason": f"{what}: {e}"}
    store.memo_put("probes", key, verdict)
    return verdict.get("facts"), _named(verdict.get("reason"), names), False


def _named(reason: str | None, names: dict[str, str]) -> str | None:
    """Decoders name the file they read (a cache blob): name the item's own file instead."""
    for blob, uri in names.items():
        reason = reason and reason.replace(blob, uri)
    return reason


def probe_all(results: list[Result], fetched: dict, store: Store, p: IngestParams) -> dict:
    """Probe (in threads) every screened item whose files all arrived; fills in facts or reason."""
    to_probe = []
    for r in results:
        if r.reason:
            continue
        files = r.item.files + r.item.sidecars
        errors = [fetched[f.uri] for f in files if isinstance(fetched[f.uri], Exception)]
        if errors:
            r.reason = f"fetch failed: {errors[0]}"
            continue
        r.blobs = {f.name: fetched[f.uri] for f in files}
        to_probe.append(r)
    stats = {"probed": 0, "probes_cached": 0}
    with tqdm(total=len(to_probe), unit="item", desc="ingest: probe", disable=not p.progress or not to_probe) as bar, \
            cf.ThreadPoolExecutor(max(1, min(p.workers, os.cpu_count() or 1))) as pool:
        futures = {pool.submit(probe, r.item, r.blobs, store, p): r for r in to_probe}
        for fut in cf.as_completed(futures):
            r = futures[fut]
            r.facts, r.reason, from_cache = fut.result()
            stats["probes_cached" if from_cache else "probed"] += 1
            bar.update()
    return stats


# ---------------------------------------------------------------- writing out_dir


def materialise(blob: Path, dest: Path) -> None:
    """dest in a folder this run just emptied: a hardlink of the cached blob, or a copy across filesystems."""
    try:
        os.link(blob, dest)
    except OSError:
        shutil.copyfile(blob, dest)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_out(results: list[Result], store: Store, out: Path) -> list[dict]:
    """Re-make out_dir from the cache; the manifest is written last (its presence means the run finished)."""
    for name in ("manifest.jsonl", "quarantine.jsonl", "videos", "frames_src"):  # nothing stale from earlier runs
        remove(out / name)
    rows = []
    for r in results:
        if r.reason:
            continue
        item = r.item
        if item.kind == "video":
            dest = out / "videos" / f"{item.id}{item.suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            materialise(store.blob(r.blobs[item.files[0].name]), dest)
        else:
            dest = out / "frames_src" / item.id
            dest.mkdir(parents=True)
            for name, sha in r.blobs.items():
                materialise(store.blob(sha), dest / name)
        rows.append({"id": item.id, "source": item.source, "path": dest.as_posix(), "kind": item.kind, **r.facts})
    bad = [quarantine_record(r.item.id, r.item.source, r.reason, STAGE) for r in results if r.reason]
    write_jsonl(out / "quarantine.jsonl", bad)
    write_jsonl(out / "manifest.jsonl", rows)
    return rows


def ingest(p: IngestParams) -> dict:
    """Ingest every candidate; write manifest.jsonl and quarantine.jsonl; return counts.

    seen = ingested + quarantined; videos + frame_folders = ingested.
    """
    store = Store(cache_root(p.cache_dir))
    with store.lock():
        pairs = sources(p)
        results = screen(pairs)
        fetched, fetch_stats = fetch_all([pair for pair, r in zip(pairs, results) if not r.reason], store, p)
        probe_stats = probe_all(results, fetched, store, p)
        rows = write_out(results, store, Path(p.out_dir))
    counts = {"seen": len(results), "ingested": len(rows), "quarantined": len(results) - len(rows),
              "videos": sum(r["kind"] == "video" for r in rows),
              "frame_folders": sum(r["kind"] == "frames" for r in rows)}
    # summary.json is part of the DVC out: only what the inputs determine. What this run had to do (fetched vs
    # cached, probed vs memoised, seconds) differs between identical re-runs and would make DVC re-run
    # extract_frames for nothing: it is returned and printed, never written to out_dir.
    write_json(Path(p.out_dir) / "summary.json", counts)
    return {**counts, **fetch_stats, **probe_stats}


def main() -> None:
    t0 = time.perf_counter()
    counts = ingest(load_params().ingest)
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
