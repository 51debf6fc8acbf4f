"""An exponential moving average of the trained weights, saved as the model instead of the last step's weights.

Greedy validation (stages/rl/validation.py) showed the demo's greedy answers swinging from step to step at the
demo's learning rate: tg parse rate 1.00 at step 100, 0.08 at step 125, 1.00 at step 150 in one run
(docs/base-model.md, sixth round). The last step is then one draw from an oscillating trajectory. Averaging the
weights along it (Polyak averaging; the EMA anchor of WARP, Rame et al. 2024) damps the oscillation while the
rollouts still come from the current policy: the average never samples, it is only what is saved.

ema <- decay * ema + (1 - decay) * weights after every optimizer step, starting from the initial weights; only
trainable parameters (LoRA: the adapters). Kept in float32 on the parameters' device; saved beside every checkpoint
(ema.safetensors) so that a resumed run continues the same average.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

FILE = "ema.safetensors"


class WeightEma:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = {n: q for n, q in model.named_parameters() if q.requires_grad}
        self.shadow = {n: q.detach().float().clone() for n, q in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for n, q in self.params.items():
            self.shadow[n].mul_(self.decay).add_(q.detach().float(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the average inside the block (validation measures what would be saved), its own
        weights again after it."""
        backup = {n: q.detach().clone() for n, q in self.params.items()}
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for n, q in self.params.items():
                    q.copy_(backup[n])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for n, q in self.params.items():
            q.copy_(self.shadow[n].to(q.dtype))

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({n: t.detach().cpu().contiguous() for n, t in self.shadow.items()}, str(Path(folder) / FILE))

    def load(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        path = Path(folder) / FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: the checkpoint has no weight average; resume with the same "
                                    "train.weight_ema it was written with, or set train.resume=false")
        saved = load_file(str(path))
        if saved.keys() != self.shadow.keys():
            raise ValueError(f"{path}: its parameters differ from the model's trainable ones")
        for n, t in saved.items():
            self.shadow[n].copy_(t)


def callback(ema: WeightEma):
    """Updates the average after each optimizer step and writes it into each checkpoint folder."""
    from transformers import TrainerCallback

    class _Ema(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ema.update()

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                ema.save(folder)

    return _Ema()
