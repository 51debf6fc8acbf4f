"""Resumable training checkpoints that survive DVC.

DVC deletes a stage's outs before it re-runs it, so checkpoints cannot live in models/run. They go under
train.checkpoint_dir/<fingerprint>/, where the fingerprint hashes everything that decides the run's trajectory:
train + model params, the training samples and the base model's files. A re-run with the same fingerprint (a
killed run, `dvc repro` again) resumes from the last COMPLETE checkpoint there: HF's Trainer restores weights,
optimizer, scheduler, RNG states and the step, and skips the batches already seen, so the data order is the same.
A different fingerprint starts afresh in its own folder; stale folders are removed at the start of a run.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

# Params that do not change the trajectory (where things go, how often we save, launch topology excluded on
# purpose: a resumed run must use the same world size, so num_processes stays IN the fingerprint).
NOT_TRAJECTORY = {"out_dir", "checkpoint_dir", "resume", "keep_checkpoints", "save_steps", "save_total_limit",
                  "logging_steps", "input_cache_dir"}
# a checkpoint is complete when transformers has written trainer_state.json, its last file, next to the weights
# and the optimizer state (torch's optimizer.pt, or DeepSpeed's global_step*/ folder)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def model_digest(name_or_path: str) -> str:
    """Content hash of a local model folder's weights and configs; a hub id hashes as its name (pin a revision)."""
    root = Path(name_or_path)
    h = hashlib.sha256()
    if not root.is_dir():
        h.update(name_or_path.encode())
        return h.hexdigest()[:16]
    for f in sorted(root.rglob("*")):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model")):
            h.update(str(f.relative_to(root)).encode())
            file_digest(f, h)
    return h.hexdigest()[:16]


def fingerprint(train: dict, model: dict, samples_path: str, think: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in train.items() if k not in NOT_TRAJECTORY}, sort_keys=True).encode())
    h.update(json.dumps(model, sort_keys=True).encode())
    h.update(model_digest(model["name_or_path"]).encode())
    h.update(str(bool(think)).encode())
    file_digest(Path(samples_path), h)
    return h.hexdigest()[:16]


def is_complete(ckpt: Path, extra: tuple[str, ...] = ()) -> bool:
    """extra: files our callbacks write after transformers' trainer_state.json (train.weight_ema's average):
    a run killed between the two left a checkpoint that cannot be resumed as it was trained."""
    has_weights = any((ckpt / w).exists() for w in WEIGHTS) or any(ckpt.glob("global_step*"))
    has_optimizer = (ckpt / "optimizer.pt").exists() or any(ckpt.glob("global_step*"))
    return (has_weights and has_optimizer and (ckpt / "trainer_state.json").exists()
            and all((ckpt / f).exists() for f in extra))


def last_complete(run_dir: str | Path, extra: tuple[str, ...] = ()) -> Path | None:
    """The highest-step complete checkpoint-N under run_dir (with the `extra` files), or None."""
    root = Path(run_dir)
    if not root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()),
                   reverse=True)
    return next((p for _, p in found if is_complete(p, extra)), None)


def remove_stale(root: str | Path, keep: str) -> list[str]:
    """Delete checkpoint folders of other fingerprints under root; returns their names."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name != keep:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed
