"""Encode each distinct video of a batch once.

A GRPO rollout batch holds G completions per prompt, each row carrying its prompt's video, so Qwen-VL's forward
gets the same pixels G times and runs them all through the vision tower (generation prefill, reference and
policy forward alike). share_video_features() wraps the model's get_video_features: identical videos of a call
(same grid, same pixels) go through the tower once and their features are handed to every row that holds them.
The language model still sees one feature block per row, in order, so the outputs are those of the per-row path;
gradients through a shared block sum over its rows, as the per-row path sums them over its copies of the tower.

One call of the tower per forward either way (what ZeRO-3's collective weight gathers need on every rank).
"""
from __future__ import annotations

import functools

import torch

WRAPPED = "_videorft_shared_video"  # marks an installed wrapper (installing twice is a no-op)


def vl_core(model) -> torch.nn.Module:
    """The Qwen-VL base model (Qwen2_5_VLModel, Qwen3VLModel) inside `model`, wrapped by peft or an engine or not:
    the module whose forward calls get_video_features and holds the vision tower as `visual`."""
    for _name, mod in model.named_modules():
        if hasattr(mod, "get_video_features") and "visual" in mod._modules and "language_model" in mod._modules:
            return mod
    raise ValueError(f"{type(model).__name__} has no Qwen-VL base model (visual + language_model)")


def distinct_videos(blocks: list[torch.Tensor], grid_thw: torch.Tensor) -> tuple[list[int], list[int]]:
    """(first, inverse) over per-video pixel blocks: the index of the first occurrence of each distinct video, and
    for every video the position of its distinct one in `first`."""
    first: list[int] = []
    inverse: list[int] = []
    for i, block in enumerate(blocks):
        for j, u in enumerate(first):
            if torch.equal(grid_thw[u], grid_thw[i]) and torch.equal(blocks[u], block):
                inverse.append(j)
                break
        else:
            inverse.append(len(first))
            first.append(i)
    return first, inverse


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
        if video_grid_thw is None or video_grid_thw.size(0) < 2:
            return original(pixel_values_videos, video_grid_thw, **kwargs)
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


class TowerCounter:
    """Counts the vision tower's calls and the videos (grid rows) it encoded, via a forward hook on `visual`
    (bench and tests: distinct videos against what the tower actually saw)."""

    def __init__(self, model):
        self.calls = 0
        self.videos = 0
        self._handle = vl_core(model).visual.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _mod, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.calls += 1
        self.videos += 0 if grid is None else int(grid.size(0))

    def reset(self) -> None:
        self.calls = self.videos = 0

    def remove(self) -> None:
        self._handle.remove()
