"""A local folder as a source: videos anywhere below it, frame folders as its immediate sub-folders.

Symbolic links are followed only within the source root: a video, frame folder, frame or sidecar whose real path
lies outside the root is listed with a problem (ingest quarantines it) and none of its bytes are read.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

from stages.io import sha256_file
from stages.sources import FRAME_SUFFIXES, Item, ItemError, RemoteFile


def _remote(p: Path) -> RemoteFile:
    st = p.stat()
    return RemoteFile(str(p), p.name, st.st_size, str(st.st_mtime_ns))


def _outside(p: Path, real_root: Path) -> str | None:
    """Why p must not be read (a symlink, or a path through one, that leaves the root), or None."""
    real = p.resolve()
    if real == real_root or real.is_relative_to(real_root):
        return None
    return f"symlink points outside the source root: {p} -> {real}"


class LocalSource:
    def __init__(self, root: str, link: bool = True):
        self.uri = root
        self.root = Path(root)
        self.link = link
        if not self.root.is_dir():
            raise FileNotFoundError(f"source {root} is not a folder")
        self.real_root = self.root.resolve()

    def videos(self, extensions: list[str]) -> Iterator[Item]:
        """Every file below the root whose suffix is a video extension, in path order."""
        exts = {e.lower() for e in extensions}
        for p in sorted(self.root.rglob("*")):
            if p.suffix.lower() in exts and p.is_file():
                yield Item(p.stem, str(p), "video", (_remote(p),), problem=_outside(p, self.real_root))

    def frame_folders(self, sidecars: list[str]) -> Iterator[Item]:
        """Each immediate sub-folder is one sequence: its *.jpg/*.jpeg files are the frames, in name order."""
        for d in sorted(self.root.iterdir()):
            if not d.is_dir():
                continue
            files = sorted(p for p in d.iterdir() if p.is_file())
            frames = tuple(_remote(p) for p in files if p.suffix.lower() in FRAME_SUFFIXES)
            extra = tuple(_remote(p) for p in files if p.name in sidecars)
            used = [p for p in files if p.suffix.lower() in FRAME_SUFFIXES or p.name in sidecars]
            problem = next(filter(None, (_outside(p, self.real_root) for p in [d, *used])), None)
            yield Item(d.name, str(d), "frames", frames, extra, problem=problem)

    def fetch(self, f: RemoteFile, dest: Path) -> tuple[int, str]:
        """A hardlink (no copy, no extra disk) where allowed, else a copy; (size, mtime_ns) of what landed."""
        try:
            before = os.stat(f.uri)
            linked = False
            if self.link:
                dest.unlink(missing_ok=True)
                try:
                    os.link(f.uri, dest)
                    linked = True
                except OSError as e:
                    if isinstance(e, FileNotFoundError):
                        raise
            if not linked:
                shutil.copyfile(f.uri, dest)
            after = os.stat(f.uri)
        except FileNotFoundError as e:
            raise ItemError(f"{f.uri} vanished after it was listed") from e
        except PermissionError as e:
            raise ItemError(f"{f.uri} is not readable: {e.strerror}") from e
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or dest.stat().st_size != after.st_size:
            raise ItemError(f"{f.uri} changed while it was being read; run again")
        return after.st_size, str(after.st_mtime_ns)

    def fetch_into(self, f: RemoteFile, store) -> tuple[str, int, str]:
        """f as a blob of `store` (stages.sources.store.Store) with no temp copy: hashed where it lies, then
        hardlinked (or copied) to its blob path; (sha256, size, mtime_ns). Ingest uses this instead of fetch for a
        local source: thousands of small frames cost a hash and a link each."""
        try:
            before = os.stat(f.uri)
            sha = sha256_file(f.uri)
            created = store.adopt(f.uri, sha, self.link)
            after = os.stat(f.uri)
        except FileNotFoundError as e:
            raise ItemError(f"{f.uri} vanished after it was listed") from e
        except PermissionError as e:
            raise ItemError(f"{f.uri} is not readable: {e.strerror}") from e
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            if created:  # its bytes may no longer be the ones its name says
                store.blob(sha).unlink(missing_ok=True)
            raise ItemError(f"{f.uri} changed while it was being read; run again")
        return sha, after.st_size, str(after.st_mtime_ns)
