"""Cache of base-model generations for the evaluate stage.

The base model does not change between candidates, so its greedy completions on the same held-out inputs are
computed once. Only the raw completions are cached (scoring is cheap and re-done every time, so a fix in a
task's parser or metric is never hidden by the cache). The key is a hash of everything that can change a
completion:
  - model: content hash of the model folder's files (weights, config, tokenizer, processor, chat template);
  - inputs: per row id, task, prompt text, fps, frame times (when the row carries them) and the content hash of
    its frame file, in evaluation order;
  - decoding: the pinned decoding settings, max_new_tokens and batch_size (left padding depends on the batch);
  - code: the generation code (stages/model/generate.py, stages/model/video_inputs.py,
    stages/model/shared_video.py, the frame reader stages/video/frames.py), torch and transformers versions, and
    the device kind.
Entries are <cache_dir>/<key>.json, written atomically; a torn or mismatched entry is ignored and rewritten.
File hashes are memoised by (path, size, mtime) in <cache_dir>/file-hashes.json so a 15 GB checkpoint is hashed
once, not on every evaluation.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from stages.io import read_json, sha256_file, sha256_json, write_json

# Files of a training output folder that do not change what the model generates.
_NOT_MODEL = {"train_summary.json", "training_args.bin"}
_GENERATION_CODE = ("model/generate.py", "model/video_inputs.py", "model/shared_video.py", "video/frames.py")


class FileHasher:
    """sha256 of files, memoised on disk by (absolute path, size, mtime_ns)."""

    def __init__(self, memo_path: str | os.PathLike | None):
        self.memo_path = Path(memo_path) if memo_path else None
        self.memo: dict = {}
        if self.memo_path and self.memo_path.exists():
            try:
                self.memo = read_json(self.memo_path)
            except (OSError, ValueError):
                self.memo = {}  # a torn memo only costs re-hashing
        self.dirty = False

    def __call__(self, path: str | os.PathLike) -> str:
        path = Path(path).resolve()
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.memo.get(str(path))
        if hit and hit[:2] == stamp:
            return hit[2]
        digest = sha256_file(path)
        self.memo[str(path)] = stamp + [digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.memo_path and self.dirty:
            write_json(self.memo_path, self.memo)
            self.dirty = False


def resolve_model_dir(name_or_path: str) -> Path | None:
    """The local folder holding a model: the path itself, or a hub id's snapshot in the local HF cache."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not a hub id, or not cached here: no content to hash
        return None


def model_fingerprint(name_or_path: str, hasher: FileHasher) -> str:
    folder = resolve_model_dir(name_or_path)
    if folder is None:
        return sha256_json({"unresolved": name_or_path})
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.name not in _NOT_MODEL and "checkpoints" not in p.relative_to(folder).parts)
    return sha256_json([[str(p.relative_to(folder)), hasher(p)] for p in files])


def inputs_fingerprint(rows: list[dict], hasher: FileHasher) -> str:
    """What the model sees, row by row: the evaluation data version as far as generation is concerned."""
    return sha256_json([[r["id"], r["task"], r["prompt"], float(r["fps"]), hasher(r["frames"])]
                        + ([r["frame_times"]] if r.get("frame_times") is not None else []) for r in rows])


def code_fingerprint(device: str) -> str:
    import torch
    import transformers

    root = Path(__file__).parent
    return sha256_json({
        "code": {f: sha256_file(root / f) for f in _GENERATION_CODE},
        "torch": torch.__version__, "transformers": transformers.__version__, "device": device,
    })


def cache_key(model_fp: str, inputs_fp: str, decoding: dict, code_fp: str) -> str:
    return sha256_json({"model": model_fp, "inputs": inputs_fp, "decoding": decoding, "code": code_fp})[:32]


class GenerationCache:
    """<dir>/<key>.json = {"key": ..., "parts": {...}, "ids": [...], "outputs": [...]}."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str, ids: list[str]) -> list[str] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            entry = read_json(path)
        except (OSError, ValueError) as e:
            print(f"evaluate: ignoring unreadable cache entry {path}: {e}")
            return None
        if entry.get("key") != key or entry.get("ids") != ids or len(entry.get("outputs", [])) != len(ids):
            print(f"evaluate: ignoring cache entry {path}: it does not match the evaluation rows")
            return None
        return entry["outputs"]

    def put(self, key: str, ids: list[str], outputs: list[str], parts: dict) -> Path:
        path = self.path(key)
        write_json(path, {"key": key, "parts": parts, "ids": ids, "outputs": outputs,
                          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return path
