"""Encode each distinct video of a batch once.

A GRPO rollout batch holds G completions per prompt, each row carrying its prompt's video, so Qwen-VL's forward
would get the same pixels G times and run them all through the vision tower (generation prefill, reference and
policy forward alike). share_video_features() wraps the model's get_video_features so that each distinct video
goes through the tower once and its features are handed to every row that holds it. The language model still
sees one feature block per row, in order, so the outputs are those of the per-row path; gradients through a
shared block sum over its rows, as the per-row path sums them over its copies of the tower.

Two ways in:
  - the caller knows which rows share a video (the trainer: rows holding one video hold one pixel tensor): it passes
    the distinct videos' pixels only, every row's grid, and the row -> distinct-video index through
    video_index(); neither the G-fold pixel tensor nor a comparison is made;
  - otherwise (evaluation, a plain forward) the wrapper finds identical videos itself (same grid, same pixels).
One call of the tower per forward either way (what ZeRO-3's collective weight gathers need on every rank).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time

import torch

WRAPPED = "_videorft_shared_video"  # marks an installed wrapper (installing twice is a no-op)
_INDEX = threading.local()  # the row -> distinct-video index of the forward under way (video_index)


def vl_core(model) -> torch.nn.Module:
    """The Qwen-VL base model (Qwen2_5_VLModel, Qwen3VLModel) inside `model`, wrapped by peft or an engine or not:
    the module whose forward calls get_video_features and holds the vision tower as `visual`."""
    for _name, mod in model.named_modules():
        if hasattr(mod, "get_video_features") and "visual" in mod._modules and "language_model" in mod._modules:
            return mod
    raise ValueError(f"{type(model).__name__} has no Qwen-VL base model (visual + language_model)")


def distinct_objects(items: list) -> tuple[list[int], list[int]]:
    """(first, inverse) over items by identity: the index of each distinct object's first occurrence, and for
    every item the position of its object in `first`."""
    seen: dict[int, int] = {}
    first: list[int] = []
    inverse: list[int] = []
    for i, item in enumerate(items):
        if id(item) not in seen:
            seen[id(item)] = len(first)
            first.append(i)
        inverse.append(seen[id(item)])
    return first, inverse


def distinct_videos(blocks: list[torch.Tensor], grid_thw: torch.Tensor) -> tuple[list[int], list[int]]:
    """(first, inverse) over per-video pixel blocks by content: equal grid and equal pixels. A few sampled patch
    rows are compared first, so distinct videos cost next to nothing."""
    first: list[int] = []
    inverse: list[int] = []
    probes = [b[:: max(1, b.size(0) // 16)] for b in blocks]
    for i, block in enumerate(blocks):
        for j, u in enumerate(first):
            if (torch.equal(grid_thw[u], grid_thw[i]) and torch.equal(probes[u], probes[i])
                    and torch.equal(blocks[u], block)):
                inverse.append(j)
                break
        else:
            inverse.append(len(first))
            first.append(i)
    return first, inverse


@contextlib.contextmanager
def video_index(inverse: list[int] | None):
    """Inside the block, a forward's pixel_values_videos holds the distinct videos only (in order of first
    appearance) and `inverse[i]` names row i's video among them; video_grid_thw still has one row per row."""
    previous = getattr(_INDEX, "value", None)
    _INDEX.value = inverse
    try:
        yield
    finally:
        _INDEX.value = previous


def current_video_index() -> list[int] | None:
    """The index set by the innermost video_index() block (None outside one)."""
    return getattr(_INDEX, "value", None)


def _rows(per_video, inverse: list[int]) -> tuple:
    return tuple(per_video[j] for j in inverse)


def share_video_features(model) -> torch.nn.Module:
    """Install the once-per-distinct-video wrapper on `model`'s Qwen-VL base model (module docstring); returns
    that base model."""
    core = vl_core(model)
    if getattr(core, WRAPPED, False):
        return core
    original = core.get_video_features  # bound, with transformers' own decorators

    @functools.wraps(original)
    def get_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
        inverse = current_video_index()
        if video_grid_thw is None or (inverse is None and video_grid_thw.size(0) < 2):
            return original(pixel_values_videos, video_grid_thw, **kwargs)
        if inverse is not None:  # the caller passed the distinct videos' pixels only
            if len(inverse) != video_grid_thw.size(0):
                raise ValueError(f"video index of {len(inverse)} rows for {video_grid_thw.size(0)} videos")
            first = [inverse.index(j) for j in range(max(inverse) + 1)]
            pixels = pixel_values_videos
            if pixels.size(0) != int(video_grid_thw[first].prod(-1).sum()):
                raise ValueError("pixel_values_videos do not hold exactly the distinct videos of the index")
        else:
            blocks = torch.split(pixel_values_videos, video_grid_thw.prod(-1).tolist())  # one per video, views
            first, inverse = distinct_videos(blocks, video_grid_thw)
            if len(first) == len(inverse):
                return original(pixel_values_videos, video_grid_thw, **kwargs)
            pixels = torch.cat([blocks[i] for i in first])
        as_tuple = kwargs.pop("return_dict", True) is False
        out = original(pixels, video_grid_thw[first], return_dict=True, **kwargs)
        out.pooler_output = _rows(out.pooler_output, inverse)
        if getattr(out, "deepstack_features", None) is not None:  # Qwen3-VL: per-layer features, split per video
            out.deepstack_features = [_rows(f, inverse) for f in out.deepstack_features]
        return out.to_tuple() if as_tuple else out

    core.get_video_features = get_video_features
    setattr(core, WRAPPED, True)
    return core


def unshare_video_features(model) -> None:
    """Remove the wrapper (the per-row path again: tests and benchmarks compare the two)."""
    core = vl_core(model)
    if getattr(core, WRAPPED, False):
        del core.get_video_features  # the instance attribute; the class's method shows through again
        delattr(core, WRAPPED)


def is_shared(model) -> bool:
    return bool(getattr(vl_core(model), WRAPPED, False))


class TowerCounter:
    """Counts the vision tower's calls, the videos (grid rows) it encoded and the CPU seconds of its forwards, via
    hooks on `visual` (bench and tests: distinct videos against what the tower actually saw)."""

    def __init__(self, model):
        self.calls = 0
        self.videos = 0
        self.seconds = 0.0
        self._t0 = 0.0
        visual = vl_core(model).visual
        self._handles = [visual.register_forward_pre_hook(self._pre, with_kwargs=True),
                         visual.register_forward_hook(self._post)]

    def _pre(self, _mod, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.calls += 1
        self.videos += 0 if grid is None else int(grid.size(0))
        self._t0 = time.process_time()

    def _post(self, *_):
        self.seconds += time.process_time() - self._t0

    def reset(self) -> None:
        self.calls = self.videos = 0
        self.seconds = 0.0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
