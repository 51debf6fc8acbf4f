"""A persistent, content-addressed cache of fetched files and of results computed from them.

Why it exists: DVC deletes a stage's outs before it runs the stage again, so anything kept only in data/raw or
data/frames is gone exactly when an incremental re-run would need it. The cache lives outside every out
(default .cache/videorft, or $VIDEORFT_CACHE_DIR); the stages re-make their outs from it with hardlinks, which
costs neither time nor disk. Deleting the cache is always safe: it only costs re-fetching and re-decoding.

Layout under the root:
    blobs/<sha[:2]>/<sha256>         file contents, named by their sha256 (written to a temp name, then renamed)
    fetched/<h[:2]>/<h>.json         what an item's files held when fetched: {source, files: {uri: {size, version,
                                     sha256}}}; h = sha256(the item's source URI: a video, a frame folder)
    <namespace>/<k[:2]>/<k>.json     memoised results (probe verdicts, ...) keyed by content hashes

Every write is a temp file plus rename, and an index entry is written only after its blob is in place, so a run
killed at any point leaves nothing half-written that a later run would trust.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from stages.io import atomic_path, read_json, sha256_file, write_json

ENV = "VIDEORFT_CACHE_DIR"
INCOMING = ".incoming."


def cache_root(configured: str | os.PathLike) -> Path:
    """The cache folder: $VIDEORFT_CACHE_DIR when set (e.g. shared by several workspaces), else the parameter."""
    return Path(os.environ.get(ENV) or configured)


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put src's bytes at dest (atomically replacing it): a hardlink where the filesystem allows, else a copy."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or no hardlinks
            shutil.copyfile(src, tmp)


def _key_path(folder: Path, key: str, suffix: str) -> Path:
    return folder / key[:2] / f"{key}{suffix}"


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ------------------------------------------------------------ blobs and what sources held

    def blob(self, sha: str) -> Path:
        return _key_path(self.root / "blobs", sha, "")

    def _entry(self, source: str) -> Path:
        return _key_path(self.root / "fetched", hashlib.sha256(source.encode()).hexdigest(), ".json")

    def fetched(self, source: str) -> dict[str, dict]:
        """What the cache recorded of one item (a video, a frame folder): file uri -> {size, version, sha256}."""
        try:
            entry = read_json(self._entry(source))
        except (OSError, ValueError):
            return {}
        return entry.get("files", {}) if entry.get("source") == source else {}

    def intact(self, entry: dict | None, size: int, version: str, verify: bool) -> str | None:
        """sha256 of a recorded file if it was fetched at this size and version and its blob is still intact."""
        if not entry or (entry.get("size"), entry.get("version")) != (size, version):
            return None
        blob = self.blob(entry["sha256"])
        try:
            if blob.stat().st_size != size:
                return None
            if verify and sha256_file(blob) != entry["sha256"]:
                blob.unlink()  # corrupted (or edited in place through a hardlink): never serve it again
                return None
        except OSError:
            return None
        return entry["sha256"]

    def record(self, source: str, files: dict[str, dict]) -> None:
        """Remember what an item's files held when fetched (uri -> {size, version, sha256}); one index file per
        item, written after its blobs are in place (a frame folder's thousands of frames are one write, not one
        each)."""
        write_json(self._entry(source), {"source": source, "files": files})

    def put(self, fetch: Callable[[Path], tuple[int, str]]) -> tuple[str, int, str]:
        """fetch(tmp) writes a file's bytes to tmp and returns (size, version) of what it wrote; the bytes become a
        blob. Returns (sha256, size, version)."""
        incoming = self.root / "blobs"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=INCOMING, suffix=".tmp", dir=incoming)
        os.close(fd)
        tmp = Path(name)
        try:
            size, version = fetch(tmp)
            sha = sha256_file(tmp)
            dest = self.blob(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return sha, size, version

    def adopt(self, src: str | os.PathLike, sha: str, link: bool) -> bool:
        """Make the local file src (whose bytes hash to sha) the blob sha, without a temp copy: a hardlink when
        `link` and the filesystem allow, else a copy (temp file, then rename). False when the blob was already
        there (nothing written)."""
        dest = self.blob(sha)
        if dest.exists():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(src, dest)
                return True
            except FileExistsError:
                return False
            except OSError:
                pass  # another filesystem, or no hardlinks
        fd, name = tempfile.mkstemp(prefix=INCOMING, suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(src, name)
            os.replace(name, dest)
        finally:
            Path(name).unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------ memoised results

    def memo_get(self, namespace: str, key: str) -> dict | None:
        try:
            return read_json(_key_path(self.root / namespace, key, ".json"))
        except (OSError, ValueError):
            return None

    def memo_put(self, namespace: str, key: str, value: dict) -> None:
        write_json(_key_path(self.root / namespace, key, ".json"), value)

    # ------------------------------------------------------------ housekeeping

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time per cache (a second run waits); sweeps temp files a killed run left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                for pattern in ("*/.*.tmp", "*/*/.*.tmp"):  # temp names of put() and of stages.io.atomic_path
                    for stale in self.root.glob(pattern):
                        stale.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
