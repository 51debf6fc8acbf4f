"""Decoded frames cached by what they are: the video's content and the exact frames asked of it.

The key is a hash of (video sha256, frame indices, output size, decoder, cache format), not of the budget
parameters: a budget change recomputes only the videos whose plan it changes (raising max_frames from 32 to 64
leaves every video shorter than 16 s alone), and a video renamed or re-ingested from elsewhere hits the cache.
Entries are uint8 (T, H, W, 3) .npy files under <cache root>/frames/, written atomically; stage extract_frames
hardlinks them into its out folder, so DVC deleting that folder costs nothing on the next run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.io import atomic_path, sha256_json
from stages.video.budget import FramePlan

FORMAT = 1  # bump when what is stored for a key changes (resize method, colour conversion)


def frame_key(sha256: str, plan: FramePlan, decoder: str) -> str:
    return sha256_json({"format": FORMAT, "sha256": sha256, "indices": plan.indices, "height": plan.height,
                        "width": plan.width, "decoder": decoder})


class FrameCache:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "frames"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, plan: FramePlan) -> Path | None:
        """The entry's path if present and of the planned shape (a damaged entry reads as a miss)."""
        path = self.path(key)
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError):
            return None
        return path if shape == (plan.num_frames, plan.height, plan.width, 3) else None

    def put(self, key: str, frames: np.ndarray) -> Path:
        path = self.path(key)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
        return path
