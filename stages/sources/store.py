"""A persistent, content-addressed cache of fetched files and of results computed from them.

Why it exists: DVC deletes a stage's outs before it runs the stage again, so anything kept only in data/raw or
data/frames is gone exactly when an incremental re-run would need it. The cache lives outside every out
(default .cache/videorft, or $VIDEORFT_CACHE_DIR); the stages re-make their outs from it with hardlinks, which
costs neither time nor disk. Deleting the cache is always safe: it only costs re-fetching and re-decoding.

Layout under the root:
    blobs/<sha[:2]>/<sha256>         file contents, named by their sha256 (written to a temp name, then renamed)
    fetched/<h[:2]>/<h>.json         what a source URI held when fetched: {uri, size, version, sha256}; h = sha256(uri)
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

    def _entry(self, uri: str) -> Path:
        return _key_path(self.root / "fetched", hashlib.sha256(uri.encode()).hexdigest(), ".json")

    def cached(self, uri: str, size: int, version: str, verify: bool) -> str | None:
        """sha256 of the cached copy of uri if it was fetched at this size and version and is still intact."""
        try:
            entry = read_json(self._entry(uri))
        except (OSError, ValueError):
            return None
        if (entry.get("uri"), entry.get("size"), entry.get("version")) != (uri, size, version):
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

    def put(self, uri: str, fetch: Callable[[Path], tuple[int, str]]) -> str:
        """fetch(tmp) writes uri's bytes to tmp and returns (size, version) of what it wrote; the bytes become a
        blob and the index remembers uri -> sha256. Returns the sha256."""
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
        write_json(self._entry(uri), {"uri": uri, "size": size, "version": version, "sha256": sha})
        return sha

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
