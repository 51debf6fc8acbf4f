"""Frame-budget arithmetic for video LLM inputs (Qwen2.5-VL conventions), pure and configurable.

Every number comes from ExtractFramesParams; nothing here is a library constant (but the 1.05 of qwen mode).
Two modes, `extract_frames.budget` (docs/data.md, "Two budget modes"):

per_video (default):
- frame i of a constant-rate video with source fps F is shown at t = i / F; duration = total_frames / F (variable
  rate: times and duration from pts, F = total_frames / duration, frames picked uniform in time; see plan_video);
- frames = round(duration * fps) floored to a multiple of frame_factor, then clamped to [min_frames, max_frames]
  and to total_frames (bounds themselves rounded inwards to multiples of frame_factor);
- indices = round(linspace(0, total_frames - 1, frames)) (also the GOT-10k box convention, see uniform_indices);
- each frame is resized to (h, w), both multiples of size_factor, aspect kept as well as the grid allows, with
  min_pixels <= h*w <= max_pixels and frames*h*w <= total_pixels. When both pixel bounds cannot hold at that frame
  count, the pixel budget wins: fewer frames (still a multiple of frame_factor).

qwen_vl_utils: the arithmetic of qwen-vl-utils' fetch_video (0.0.10, which VideoChat-R1 pinned, and 0.0.14 alike),
with its constants taken from the params (FPS = fps, FPS_MIN_FRAMES = min_frames, FPS_MAX_FRAMES = max_frames,
FRAME_FACTOR = frame_factor, the 28 of Qwen2.5-VL = size_factor, VIDEO_MAX_PIXELS = max_pixels):
- frames = total_frames / F * fps (not rounded), clamped to [ceil(min_frames), floor(max_frames)] (to frame_factor)
  and to total_frames, then floored to a multiple of frame_factor (smart_nframes): 69.8 -> 68, not 70;
- each frame's cap = min(max_pixels, max(total_pixels / frames * frame_factor, int(1.05 * min_pixels))): total_pixels
  bounds the pixels per temporal patch (tokens x 28 x 28), so frames*h*w may reach 2 x total_pixels, and
  min_pixels wins over total_pixels on long videos;
- (h, w) = smart_resize(height, width, size_factor, min_pixels, cap), Qwen's rule as is: its result may fall
  outside [min_pixels, cap] (no second choice, no frame dropped);
- sampled fps = frames / total_frames * F; indices as per_video (float64 linspace; qwen-vl-utils rounds a float32
  torch.linspace, which differs by one source frame at a few positions on videos of more than ~17,000 frames).
Identical to fetch_video whenever max_pixels <= 768*28*28 (the library caps at that constant; here max_pixels is
the cap). JPEG frame folders (plan_sequence) use per_video in both modes.
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


def smart_resize(height: int, width: int, factor: int, lo: float, hi: float) -> tuple[int, int]:
    """Qwen's smart_resize rule: round both sides to the grid; if that exceeds hi, scale the frame down to hi and
    floor; if below lo, scale up to lo and ceil. The result can miss [lo, hi] (narrow windows) or have a 0 side."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds {MAX_ASPECT_RATIO}")
    area = height * width
    h, w = max(factor, _round_to(height, factor)), max(factor, _round_to(width, factor))
    if h * w > hi:
        s = math.sqrt(area / hi)
        return _floor_to(height / s, factor), _floor_to(width / s, factor)
    if h * w < lo:
        s = math.sqrt(lo / area)
        return _ceil_to(height * s, factor), _ceil_to(width * s, factor)
    return h, w


def resize_to_grid(height: int, width: int, factor: int, lo: int, hi: int) -> tuple[int, int] | None:
    """(h, w) multiples of factor with lo <= h*w <= hi, closest to the input shape; None if the grid has none.

    First Qwen's smart_resize choice (sides at least one factor); if that misses the window (narrow windows, tiny
    frames), the floor/ceil neighbours with the best aspect ratio.
    """
    h, w = (max(factor, x) for x in smart_resize(height, width, factor, lo, hi))
    if lo <= h * w <= hi:
        return h, w
    area = height * width
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


def qwen_num_frames(total_frames: int, source_fps: float, p: ExtractFramesParams) -> int:
    """qwen-vl-utils' smart_nframes (fps mode): total_frames / source_fps * fps, clamped, floored to frame_factor."""
    f = p.frame_factor
    if total_frames < f:
        raise ValueError(f"video has {total_frames} frames, fewer than frame_factor={f}")
    n = total_frames / source_fps * p.fps
    n = min(max(n, _ceil_to(p.min_frames, f)), _floor_to(p.max_frames, f), total_frames)
    return _floor_to(n, f)


def qwen_max_pixels(n: int, p: ExtractFramesParams) -> float:
    """fetch_video's per-frame pixel cap for n frames: total_pixels counts per temporal patch, min_pixels wins."""
    return min(p.max_pixels, max(p.total_pixels / n * p.frame_factor, int(p.min_pixels * 1.05)))


def _plan_qwen(total_frames: int, source_fps: float, height: int, width: int, p: ExtractFramesParams):
    n = qwen_num_frames(total_frames, source_fps, p)
    h, w = smart_resize(height, width, p.size_factor, p.min_pixels, qwen_max_pixels(n, p))
    if h < 1 or w < 1:
        raise ValueError(f"qwen-vl-utils' smart_resize gives {h}x{w} for {height}x{width} frames")
    return n, h, w, n / total_frames * source_fps


def indices_by_time(times: list[float], n: int) -> list[int]:
    """For each of n times spread evenly over [first, last frame time], the frame shown nearest to it (ties to the
    earlier frame). Variable-rate video: frames uniform in time, not in index."""
    t = np.asarray(times, dtype=np.float64)
    targets = np.linspace(t[0], t[-1], n)
    right = np.clip(np.searchsorted(t, targets), 1, len(t) - 1)
    left = right - 1
    pick = np.where(targets - t[left] <= t[right] - targets, left, right) if len(t) > 1 else np.zeros(n, int)
    return [int(i) for i in pick]


def plan_video(
    duration: float, total_frames: int, source_fps: float, height: int, width: int, p: ExtractFramesParams,
    times: list[float] | None = None,
) -> FramePlan:
    """Which frames of a video to decode, their timestamps and the size to resize them to (mode p.budget).

    `times` (seconds of every frame from its pts, stages.video.timing) is given for variable-rate video only: the
    frames are then picked uniform in time and carry their own times. Without it, frame i is at i / source_fps."""
    check_params(p)
    if not source_fps > 0:
        raise ValueError(f"source fps must be > 0, got {source_fps}")
    if p.budget == "qwen_vl_utils":
        n, h, w, sample_fps = _plan_qwen(total_frames, source_fps, height, width, p)
    else:
        n, h, w = _fit(height, width, num_frames(duration, total_frames, p), p)
        sample_fps = n / duration
    if times is not None:
        if len(times) != total_frames:
            raise ValueError(f"{len(times)} frame times for {total_frames} frames")
        idx = indices_by_time(times, n)
        return FramePlan(idx, [round(times[i], 6) for i in idx], h, w, sample_fps)
    idx = uniform_indices(total_frames, n)
    return FramePlan(idx, [round(i / source_fps, 6) for i in idx], h, w, sample_fps)


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
