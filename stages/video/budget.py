"""Frame-budget arithmetic for video LLM inputs (Qwen2.5-VL conventions), pure and configurable.

Every number comes from ExtractFramesParams; nothing here is a library constant. Conventions:
- frame i of a video with source fps F is shown at t = i / F; duration = total_frames / F;
- frames = round(duration * fps) floored to a multiple of frame_factor, then clamped to [min_frames, max_frames]
  and to total_frames (bounds themselves rounded inwards to multiples of frame_factor);
- indices = round(linspace(0, total_frames - 1, frames)) (also the GOT-10k box convention, see uniform_indices);
- each frame is resized to (h, w), both multiples of size_factor, aspect kept as well as the grid allows, with
  min_pixels <= h*w <= max_pixels and frames*h*w <= total_pixels. When both pixel bounds cannot hold at that frame
  count, the pixel budget wins: fewer frames (still a multiple of frame_factor).
Qwen's own utilities differ here: they let min_pixels override total_pixels and count total_pixels per
temporal patch (frames / frame_factor). Here total_pixels is a hard per-video bound on frames*h*w.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stages.params import ExtractFramesParams

MAX_ASPECT_RATIO = 200  # beyond this a frame cannot be patched sensibly (Qwen rejects it too)


@dataclass(frozen=True)
class FramePlan:
    """What to decode and how big each frame becomes."""

    indices: list[int]
    timestamps: list[float]  # seconds, one per index
    height: int
    width: int
    sample_fps: float  # frames / duration

    @property
    def num_frames(self) -> int:
        return len(self.indices)


def _floor_to(x: float, f: int) -> int:
    return int(math.floor(x / f)) * f


def _ceil_to(x: float, f: int) -> int:
    return int(math.ceil(x / f)) * f


def _round_to(x: float, f: int) -> int:
    return int(round(x / f)) * f


def uniform_indices(total: int, n: int) -> list[int]:
    """round(linspace(0, total-1, n)): n indices spread evenly, first and last included (numpy rounds half to even)."""
    if total < 1 or n < 1:
        raise ValueError(f"need total >= 1 and n >= 1, got total={total}, n={n}")
    return [int(i) for i in np.round(np.linspace(0, total - 1, n))]


def check_params(p: ExtractFramesParams) -> None:
    """Reject budgets no video can satisfy, with the reason."""
    if p.fps <= 0:
        raise ValueError(f"fps must be > 0, got {p.fps}")
    if p.frame_factor < 1 or p.size_factor < 1:
        raise ValueError(f"frame_factor and size_factor must be >= 1, got {p.frame_factor}, {p.size_factor}")
    if p.min_frames < 1 or p.max_frames < p.min_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {p.min_frames}..{p.max_frames}")
    if p.max_frames < p.frame_factor:
        raise ValueError(f"max_frames={p.max_frames} is below frame_factor={p.frame_factor}")
    if p.min_pixels < 1 or p.max_pixels < p.min_pixels:
        raise ValueError(f"need 1 <= min_pixels <= max_pixels, got {p.min_pixels}..{p.max_pixels}")
    if p.max_pixels < p.size_factor**2:
        raise ValueError(f"max_pixels={p.max_pixels} is below one {p.size_factor}x{p.size_factor} patch")
    if p.total_pixels < p.frame_factor * max(p.min_pixels, p.size_factor**2):
        raise ValueError(
            f"total_pixels={p.total_pixels} cannot hold {p.frame_factor} frames of at least "
            f"{max(p.min_pixels, p.size_factor**2)} pixels"
        )
    if p.tracking_frames < 1 or p.tracking_frames % p.frame_factor:
        raise ValueError(f"tracking_frames={p.tracking_frames} must be a positive multiple of frame_factor")


def num_frames(duration: float, total_frames: int, p: ExtractFramesParams) -> int:
    """round(duration*fps) floored to a multiple of frame_factor, clamped to [min_frames, max_frames] and the video.

    A video with fewer frames than min_frames keeps what it has (floored to frame_factor), as Qwen does.
    """
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    f = p.frame_factor
    if total_frames < f:
        raise ValueError(f"video has {total_frames} frames, fewer than frame_factor={f}")
    upper = _floor_to(min(p.max_frames, total_frames), f)
    lower = min(_ceil_to(p.min_frames, f), upper)
    n = math.floor(duration * p.fps + 0.5)  # half up, not banker's rounding
    return min(max(_floor_to(n, f), lower), upper)


def resize_to_grid(height: int, width: int, factor: int, lo: int, hi: int) -> tuple[int, int] | None:
    """(h, w) multiples of factor with lo <= h*w <= hi, closest to the input shape; None if the grid has none.

    First Qwen's smart_resize choice (round; scale down and floor when too big; scale up and ceil when too small);
    if that misses the window (narrow windows, tiny frames), the floor/ceil neighbours with the best aspect ratio.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds {MAX_ASPECT_RATIO}")
    area = height * width
    h, w = max(factor, _round_to(height, factor)), max(factor, _round_to(width, factor))
    if h * w > hi:
        s = math.sqrt(area / hi)
        h, w = max(factor, _floor_to(height / s, factor)), max(factor, _floor_to(width / s, factor))
    elif h * w < lo:
        s = math.sqrt(lo / area)
        h, w = _ceil_to(height * s, factor), _ceil_to(width * s, factor)
    if lo <= h * w <= hi:
        return h, w
    s = math.sqrt(min(max(area, lo), hi) / area)
    hs, ws = height * s, width * s
    cands = [
        (a, b)
        for a in {max(factor, _floor_to(hs, factor)), _ceil_to(hs, factor)}
        for b in {max(factor, _floor_to(ws, factor)), _ceil_to(ws, factor)}
        if lo <= a * b <= hi
    ]
    if not cands:
        return None
    return min(cands, key=lambda c: (abs(math.log((c[0] / c[1]) / (height / width))), c))


def frame_size(height: int, width: int, n: int, p: ExtractFramesParams) -> tuple[int, int] | None:
    """Per-frame (h, w) for n frames under the pixel bounds, or None if n frames cannot fit."""
    hi = min(p.max_pixels, p.total_pixels // n)
    if hi < p.min_pixels:
        return None
    return resize_to_grid(height, width, p.size_factor, p.min_pixels, hi)


def _fit(height: int, width: int, n: int, p: ExtractFramesParams) -> tuple[int, int, int]:
    """Largest frame count <= n (multiple of frame_factor) whose frames fit the pixel budget, with its size."""
    while n >= p.frame_factor:
        size = frame_size(height, width, n, p)
        if size is not None:
            return n, *size
        n -= p.frame_factor
    raise ValueError(
        f"no frame size for {height}x{width} fits min_pixels={p.min_pixels}, max_pixels={p.max_pixels}, "
        f"total_pixels={p.total_pixels} on a {p.size_factor}-pixel grid"
    )


def plan_video(
    duration: float, total_frames: int, source_fps: float, height: int, width: int, p: ExtractFramesParams
) -> FramePlan:
    """Which frames of a video to decode, their timestamps and the size to resize them to."""
    check_params(p)
    if not source_fps > 0:
        raise ValueError(f"source fps must be > 0, got {source_fps}")
    n, h, w = _fit(height, width, num_frames(duration, total_frames, p), p)
    idx = uniform_indices(total_frames, n)
    return FramePlan(idx, [round(i / source_fps, 6) for i in idx], h, w, n / duration)


def plan_sequence(total_frames: int, source_fps: float, height: int, width: int, p: ExtractFramesParams) -> FramePlan:
    """A JPEG frame folder (tracking): exactly tracking_frames frames at round(linspace(0, N-1, tracking_frames))."""
    check_params(p)
    if total_frames < 1:
        raise ValueError("frame folder has no frames")
    if not source_fps > 0:
        raise ValueError(f"source fps must be > 0, got {source_fps}")
    n = p.tracking_frames
    size = frame_size(height, width, n, p)
    if size is None:
        raise ValueError(f"{n} tracking frames of {height}x{width} do not fit the pixel budget")
    idx = uniform_indices(total_frames, n)  # repeats indices if the folder has fewer than n frames
    return FramePlan(idx, [round(i / source_fps, 6) for i in idx], *size, n / (total_frames / source_fps))
