"""Processed model inputs of a sample, cached so training and evaluation run the processor once per sample.

The frame cache removes decoding; what remains per use is the processor: normalising the frames into float
patches (pixel_values_videos), the grid, Qwen2.5-VL's second_per_grid_ts, and the prompt's input_ids with the
video tokens (and Qwen3-VL's frame times) written in. encode_sample's output is stored as one safetensors file
per key under <root>/, written atomically; a torn file reads as a miss and is rewritten.

The key hashes everything the output depends on:
  - the frames file's identity: real path, size and mtime (frame-cache entries are written once, atomically, so a
    new clip is a new file; hashing the bytes on every read would cost what the cache saves);
  - fps, the row's frame_times and the chat messages;
  - the processor's configuration: its class, the video processor's settings, the chat template, the tokenizer
    (class and a hash of its content: vocabulary, merges, added tokens) and the transformers version. Not its
    name and size: two tokenizers at one path with one size (a retrained tiny base) tokenise differently, and
    keyed on the name a stale entry fed one model another's token ids;
  - FORMAT, bumped when what is stored changes.
Entries are float32 like the processor's output (about 8x the uint8 frames), so the cache lives outside DVC's
outs, next to the frame cache (.cache/videorft/inputs by default).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from stages.io import atomic_path, sha256_json
from stages.model.video_inputs import encode_sample, video_message

FORMAT = 1


def processor_config(processor) -> dict:
    """What of a processor decides encode()'s output (module docstring)."""
    import transformers

    tok = processor.tokenizer
    return {"class": type(processor).__name__, "video": processor.video_processor.to_dict(),
            "chat_template": processor.chat_template, "tokenizer": [type(tok).__name__, tokenizer_hash(tok)],
            "transformers": transformers.__version__}


def tokenizer_hash(tok) -> str:
    """sha256 of what decides the token ids: a fast tokenizer's whole serialised state (vocabulary, merges,
    normaliser, added tokens), else the vocabulary with its added tokens."""
    import hashlib

    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return hashlib.sha256(backend.to_str().encode()).hexdigest()
    return sha256_json(sorted(tok.get_vocab().items()))


def input_cache(cache_dir: str | None) -> "InputCache | None":
    """The cache at the stage parameter `cache_dir` (None: no cache); $VIDEORFT_CACHE_DIR/inputs wins when that
    variable is set, as for the evaluation's base-model cache."""
    if not cache_dir:
        return None
    root = os.environ.get("VIDEORFT_CACHE_DIR")
    return InputCache(Path(root) / "inputs" if root else Path(os.path.expanduser(cache_dir)))


class InputCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        # id(processor) -> (processor, hash of its config): read once per processor object; holding the object
        # keeps its id from being reused by another processor
        self._processors: dict[int, tuple[object, str]] = {}
        self.hits = self.misses = 0

    def key(self, processor, row: dict, messages: list[dict]) -> str:
        pid = id(processor)
        if pid not in self._processors:
            self._processors[pid] = (processor, sha256_json(processor_config(processor)))
        st = os.stat(row["frames"])
        frames = [os.path.realpath(row["frames"]), st.st_size, st.st_mtime_ns]
        return sha256_json({"format": FORMAT, "processor": self._processors[pid][1], "frames": frames,
                            "fps": float(row["fps"]), "frame_times": row.get("frame_times"), "messages": messages})

    def encode_sample(self, processor, row: dict, messages: list[dict] | None = None) -> dict:
        """encode_sample(processor, row, messages), from the cache when it holds the entry."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        messages = messages or video_message(row["prompt"])
        path = self.root / f"{self.key(processor, row, messages)}.safetensors"
        if path.exists():
            try:
                stored = load_file(str(path))
            except (SafetensorError, OSError):  # torn or foreign file: recompute below
                stored = None
            if stored is not None and "input_ids" in stored:
                self.hits += 1
                return {**stored, "input_ids": stored["input_ids"].tolist()}
        self.misses += 1
        row_inputs = encode_sample(processor, row, messages)
        tensors = {k: v.contiguous() for k, v in row_inputs.items() if k != "input_ids"}
        with atomic_path(path) as tmp:
            save_file({**tensors, "input_ids": torch.tensor(row_inputs["input_ids"])}, str(tmp))
        return row_inputs
