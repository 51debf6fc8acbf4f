"""Stage tiny_model: build the demo's tiny Qwen2.5-VL (or, with tiny_model.family=qwen3_vl, Qwen3-VL) offline
(random weights; no hub access)."""
from __future__ import annotations

import shutil
from pathlib import Path

from stages.params import TinyModelParams, load_params
from stages.model.tiny import build_tiny_model


def run(p: TinyModelParams) -> dict:
    out = Path(p.out_dir)
    if out.exists():
        shutil.rmtree(out)  # a stale file from another config must not survive
    return build_tiny_model(p, out)


def main() -> None:
    summary = run(load_params().tiny_model)
    print(f"tiny_model: {summary['family']}, {summary['parameters']:,} parameters, vocab {summary['vocab_size']}")


if __name__ == "__main__":
    main()
