"""Where videos come from: a local folder or an S3 prefix (any S3-compatible store), listed as Items.

An Item is one video file or one JPEG frame folder (GOT-10k sequence); its files are RemoteFiles, each with a
`version` that changes when its bytes change (S3 ETag, local mtime in ns), so a re-run can tell what it already
has. A source fetches one file at a time into a path it is given; a problem with one file (vanished, access
denied, checksum mismatch) raises ItemError and costs only that item, anything else stops the run. An item whose
listing alone shows it must not be used (a local symlink pointing outside the source root, an S3 key with a `.` or
`..` segment) is still listed, with `problem` set, so that ingest quarantines it with that reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

from pathlib import Path

FRAME_SUFFIXES = (".jpg", ".jpeg")
UNSAFE_SEGMENTS = (".", "..")


def unsafe_id(item_id: str) -> str | None:
    """Why an id cannot name a file or folder of its own under the out folder, or None when it can."""
    if item_id in ("", *UNSAFE_SEGMENTS) or "/" in item_id or "\\" in item_id or "\0" in item_id:
        return f"unusable id {item_id!r}: not a plain file or folder name"
    return None


class ItemError(Exception):
    """One item cannot be fetched; the message says why (never with credentials)."""


@dataclass(frozen=True)
class RemoteFile:
    uri: str  # s3://bucket/key or a local path, as the user would name it
    name: str  # file name inside its item (a frame's name; the video's own name)
    size: int
    version: str  # ETag (S3) or mtime_ns (local): changes when the bytes change


@dataclass(frozen=True)
class Item:
    id: str  # a video's file stem, a frame folder's name
    source: str  # URI of the video or of the frame folder
    kind: str  # "video" | "frames"
    files: tuple[RemoteFile, ...]  # the video, or the frames in name order
    sidecars: tuple[RemoteFile, ...] = field(default=())  # frame folder annotations (groundtruth.txt, ...)
    problem: str | None = None  # why the listing alone makes it unusable (quarantined before anything is fetched)

    @property
    def suffix(self) -> str:
        return Path(self.files[0].name).suffix.lower() if self.kind == "video" else ""


class Source(Protocol):
    uri: str

    def videos(self, extensions: list[str]) -> Iterator[Item]: ...

    def frame_folders(self, sidecars: list[str]) -> Iterator[Item]: ...

    def fetch(self, f: RemoteFile, dest: Path) -> tuple[int, str]:
        """Write f's bytes to dest; return (size, version) of what was written."""
        ...


def open_source(uri: str, *, endpoint_url: str | None = None, profile: str | None = None, max_attempts: int = 10,
                page_size: int = 1000, pool: int = 10, link_local: bool = True) -> Source:
    """The source for a URI: s3://bucket/prefix, or a local folder (plain path or file://)."""
    if uri.startswith("s3://"):
        from stages.sources.s3 import S3Source

        return S3Source(uri, endpoint_url=endpoint_url, profile=profile, max_attempts=max_attempts,
                        page_size=page_size, pool=pool)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported source {uri!r}: use a local folder or s3://bucket/prefix")
    from stages.sources.local import LocalSource

    return LocalSource(uri.removeprefix("file://"), link=link_local)
