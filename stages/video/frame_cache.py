"""Decoded frames cached by what they are: the video's content and the exact frames asked of it.

The key is a hash of (video sha256, frame indices, output size, decoder, cache format), not of the budget
parameters: a budget change recomputes only the videos whose plan it changes (raising max_frames from 32 to 64
leaves every video shorter than 16 s alone), and a video renamed or re-ingested from elsewhere hits the cache.
Entries are uint8 (T, H, W, 3) .npy files under <cache root>/frames/, written atomically; stage extract_frames
hardlinks them into its out folder, so DVC deleting that folder costs nothing on the next run.

Each entry has a <key>.npy.sha256 next to it: the sha256 of the .npy bytes, written after the .npy. Reading an
entry re-hashes it, so bytes changed in place without changing the size (a bad disk, an edit through one of the
hardlinks in data/frames) are caught: such an entry, or one without its hash (a run killed between the two
writes, a cache from before hashes were stored), reads as a miss with a reason, and the stage decodes it again
and says so. Hashing costs far less than decoding (docs/data.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.io import atomic_path, sha256_file, sha256_json, write_text
from stages.video.budget import FramePlan
from stages.video.frames import FramesError, read_cached

FORMAT = 1  # bump when what is stored for a key changes (resize method, colour conversion)


def frame_key(sha256: str, plan: FramePlan, decoder: str, revision: int = 1) -> str:
    """revision > 1 marks frames that an older decoder gave wrongly for the same key (unturned portrait video,
    AVI packed B-frames, unchecked decord); it is hashed only then, so every other key stays what it was."""
    spec = {"format": FORMAT, "sha256": sha256, "indices": plan.indices, "height": plan.height,
            "width": plan.width, "decoder": decoder}
    return sha256_json({**spec, "revision": revision} if revision > 1 else spec)


class FrameCache:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "frames"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def hash_path(self, key: str) -> Path:
        return self.path(key).with_suffix(".npy.sha256")

    def check(self, key: str, plan: FramePlan) -> tuple[Path | None, str | None]:
        """(path, None) for an intact entry of the planned shape; (None, None) when there is no entry; (None, why)
        for an entry that exists but cannot be trusted (its bytes do not hash to what was written, no hash was
        stored, unreadable, another shape)."""
        path = self.path(key)
        if not path.exists():
            return None, None
        try:
            stored = self.hash_path(key).read_text().strip()
        except FileNotFoundError:
            return None, "no content hash stored with the cached frames"
        except OSError as e:
            return None, f"content hash unreadable: {e.strerror or e}"
        try:
            actual = sha256_file(path)
            shape = read_cached(path, meta=False).array.shape
        except OSError as e:
            return None, f"cached frames unreadable: {type(e).__name__}: {e}"
        except FramesError as e:
            return None, f"cached frames unreadable: {e.reason}"
        if actual != stored:
            return None, f"cached frames corrupted: sha256 {actual[:12]}... != {stored[:12]}... written with them"
        planned = (plan.num_frames, plan.height, plan.width, 3)
        if shape != planned:
            return None, f"cached frames have shape {shape}, planned {planned}"
        return path, None

    def get(self, key: str, plan: FramePlan) -> Path | None:
        """The entry's path if present, intact and of the planned shape (anything else reads as a miss)."""
        return self.check(key, plan)[0]

    def put(self, key: str, frames: np.ndarray) -> Path:
        """Write the entry, then its content hash (an entry without one is never trusted)."""
        path = self.path(key)
        self.hash_path(key).unlink(missing_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
            digest = sha256_file(tmp)
        write_text(self.hash_path(key), digest + "\n")
        return path
