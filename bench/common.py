"""Shared helpers of the benchmarks: realistic test clips and side-by-side timing.

Synthetic-benchmark videos (flat shapes on a grey background) compress to almost nothing and decode unrealistically
fast, so speed is measured on clips that look like camera footage to the encoder: a slow pan and zoom over a
textured scene (several octaves of smooth noise), objects moving across it and a little sensor grain, encoded
with libx264 at its defaults for keyframes and B-frames (GOP 250), CRF 23.
"""
from __future__ import annotations

import fractions
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from stages.io import atomic_path


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB scene of smooth blobs and fine detail (sum of upsampled noise octaves), uint8."""
    from PIL import Image

    acc = np.zeros((height, width, 3), np.float32)
    for octave, weight in ((8, 1.0), (32, 0.5), (128, 0.25), (512, 0.3)):
        small = rng.uniform(0, 255, (max(2, height * octave // width), octave, 3)).astype(np.uint8)
        acc += weight * np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
    acc = (acc - acc.min()) / (acc.max() - acc.min()) * 235 + 10
    return acc.astype(np.uint8)


def make_clip(path: Path, seconds: float, width: int, height: int, fps: float = 25.0, seed: int = 0) -> Path:
    """Write an H.264 mp4 of camera-like footage (see module docstring); returns path. Deterministic in seed."""
    import av

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    scene = texture(rng, int(height * 1.5), int(width * 1.5))
    sh, sw = scene.shape[:2]
    blobs = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-4, 4), rng.uniform(-3, 3),
              int(rng.uniform(0.05, 0.15) * height), rng.integers(0, 255, 3)) for _ in range(4)]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            st = out.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
            st.width, st.height, st.pix_fmt = width, height, "yuv420p"
            st.options = {"crf": "23", "preset": "veryfast"}
            for i in range(n):
                u = i / max(n - 1, 1)
                y0 = int((sh - height) * (0.5 + 0.5 * np.sin(2 * np.pi * u)) )
                x0 = int((sw - width) * u)
                frame = scene[y0:y0 + height, x0:x0 + width].copy()
                for bx, by, vx, vy, r, colour in blobs:
                    cx, cy = int(bx + vx * i) % width, int(by + vy * i) % height
                    frame[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = colour
                grain = rng.integers(-8, 9, (height, width, 1), dtype=np.int16)
                frame = np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)
                out.mux(st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(st.encode())
    return path


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall seconds of `repeat` calls of fn."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)
