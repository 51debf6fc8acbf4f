"""Stage ingest: bring videos and JPEG frame folders into out_dir with a manifest; quarantine what is unusable.

Writes (the whole out_dir is one DVC out):
- videos/<id><suffix>      hardlink of the source when the filesystem allows, else a copy
- frames_src/<id>/*.jpg     the same for frame folders
- manifest.jsonl            one row per ingested item: id, source, path (under out_dir; relative to the repo root
                            when out_dir is), kind (video | frames), sha256 (of the file; for a frame folder of its
                            frame names and hashes), bytes, duration, fps, frames, width, height, codec
- quarantine.jsonl          one stages.io.quarantine_record per rejected item; ingested + quarantined = seen

Ids: a video's file stem, a frame folder's name. The first item (in sorted listing order, videos first) with an
id wins; later ones are quarantined as duplicates. Sources are listed by a lister chosen by URI scheme
(LISTERS); each yields Candidates whose local_path can be read. S3 is a later addition there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from stages.io import atomic_path, quarantine_record, sha256_file, write_jsonl
from stages.params import IngestParams, load_params
from stages.video.decode import DecodeError, frame_files, probe_frames, probe_video, read_frames

STAGE = "ingest"


@dataclass(frozen=True)
class Candidate:
    id: str
    source: str  # where it came from, as the user would name it (path or URI)
    kind: str  # "video" | "frames"
    local_path: Path


def list_local_videos(root: str, extensions: list[str]) -> Iterator[Candidate]:
    """Every file under root (recursive) whose suffix is a video extension, in path order."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"video source {root} is not a folder")
    exts = {e.lower() for e in extensions}
    for p in sorted(base.rglob("*")):
        if p.suffix.lower() in exts and not p.is_dir():
            yield Candidate(p.stem, str(p), "video", p)


def list_frame_folders(root: str) -> Iterator[Candidate]:
    """Each immediate sub-folder of root is one frame sequence."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"frame folder source {root} is not a folder")
    for p in sorted(base.iterdir()):
        if p.is_dir():
            yield Candidate(p.name, str(p), "frames", p)


# scheme -> lister of video candidates; "s3" goes here when S3 sources arrive
LISTERS: dict[str, Callable[[str, list[str]], Iterable[Candidate]]] = {"file": list_local_videos}


def video_lister(source: str) -> Callable[[str, list[str]], Iterable[Candidate]]:
    scheme = source.split("://", 1)[0] if "://" in source else "file"
    if scheme not in LISTERS:
        raise NotImplementedError(f"no lister for {scheme}:// sources yet (have: {sorted(LISTERS)})")
    return LISTERS[scheme]


# ---------------------------------------------------------------- placing files


def place_file(src: Path, dest: Path) -> None:
    """Hardlink src at dest (atomically replacing dest); copy when linking is not possible."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # other filesystem, or links not supported
            shutil.copyfile(src, tmp)


def check_video(c: Candidate) -> dict:
    """Probe and decode the first frame; raise ValueError/DecodeError with the reason.

    Later frames are not decoded here (long videos); extract_frames quarantines a video whose sampled frames fail.
    """
    size = c.local_path.stat().st_size
    if size == 0:
        raise ValueError("zero-byte file")
    info = probe_video(c.local_path)
    read_frames(c.local_path, [0], backend="pyav")
    return {"sha256": sha256_file(c.local_path), "bytes": size, **info.as_dict()}


def check_frames(c: Candidate, fps: float) -> dict:
    files = frame_files(c.local_path)
    if not files:
        raise ValueError("frame folder has no JPEG frames")
    if any(f.stat().st_size == 0 for f in files):
        raise ValueError("frame folder has zero-byte frames")
    info = probe_frames(c.local_path, fps)
    read_frames(c.local_path, [0, len(files) - 1])  # also checks that first and last frame sizes agree
    tree = hashlib.sha256()  # one hash for the folder: names and contents of its frames
    for f in files:
        tree.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return {"sha256": tree.hexdigest(), "bytes": sum(f.stat().st_size for f in files), **info.as_dict()}


def check(c: Candidate, p: IngestParams) -> dict:
    """Facts for the manifest, or ValueError/DecodeError/OSError saying why the item is unusable."""
    return check_video(c) if c.kind == "video" else check_frames(c, p.frame_folder_fps)


def reason_for(c: Candidate, e: Exception) -> str:
    if isinstance(e, DecodeError):
        return f"not a decodable video: {e}" if c.kind == "video" else f"unreadable frames: {e}"
    if isinstance(e, OSError):
        return f"unreadable: {e}"
    return str(e)


def place(c: Candidate, out: Path) -> Path:
    """Put the item under out (errors here are the stage's, not the item's: they propagate)."""
    if c.kind == "video":
        dest = out / "videos" / f"{c.id}{c.local_path.suffix.lower()}"
        place_file(c.local_path, dest)
    else:
        dest = out / "frames_src" / c.id
        for f in frame_files(c.local_path):
            place_file(f, dest / f.name)
    return dest


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def candidates(p: IngestParams) -> Iterator[Candidate]:
    yield from video_lister(p.source)(p.source, p.extensions)
    if p.frame_folders:
        yield from list_frame_folders(p.frame_folders)


def ingest(p: IngestParams) -> dict:
    """Ingest every candidate; write manifest.jsonl and quarantine.jsonl; return counts.

    seen = ingested + quarantined; videos + frame_folders = ingested.
    """
    out = Path(p.out_dir)
    for name in ("manifest.jsonl", "quarantine.jsonl", "videos", "frames_src"):  # nothing stale from earlier runs
        remove(out / name)
    rows, bad, first_source = [], [], {}
    for c in candidates(p):
        if c.id in first_source:
            reason = f"duplicate id: already ingested from {first_source[c.id]}"
            bad.append(quarantine_record(c.id, c.source, reason, STAGE))
            continue
        try:
            facts = check(c, p)
        except (ValueError, DecodeError, OSError) as e:
            bad.append(quarantine_record(c.id, c.source, reason_for(c, e), STAGE))
            continue
        dest = place(c, out)
        rows.append({"id": c.id, "source": c.source, "path": dest.as_posix(), "kind": c.kind, **facts})
        first_source[c.id] = c.source
    write_jsonl(out / "quarantine.jsonl", bad)
    write_jsonl(out / "manifest.jsonl", rows)  # last: its presence means the run finished
    return {"seen": len(rows) + len(bad), "ingested": len(rows), "quarantined": len(bad),
            "videos": sum(r["kind"] == "video" for r in rows),
            "frame_folders": sum(r["kind"] == "frames" for r in rows)}


def main() -> None:
    t0 = time.perf_counter()
    counts = ingest(load_params().ingest)
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
