"""The processed-input cache (stages/model/input_cache.py): a hit gives exactly what the processor gives; what
changes the processor's output changes the key; a torn entry is recomputed."""
import os
import shutil

import numpy as np
import pytest
import torch


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and a["input_ids"] == b["input_ids"] and all(
        torch.equal(a[k], b[k]) for k in a if k != "input_ids")


@pytest.fixture
def setup(tiny_model_dir, frame_files, tmp_path):
    from transformers import AutoProcessor

    from stages.model.input_cache import InputCache

    frames = tmp_path / "clip.npy"
    shutil.copy(frame_files[0], frames)
    row = {"prompt": "When is it?", "frames": str(frames), "fps": 2.0, "frame_times": [i / 2 for i in range(8)]}
    return AutoProcessor.from_pretrained(tiny_model_dir), InputCache(tmp_path / "inputs"), row, tiny_model_dir


def test_a_hit_equals_a_fresh_encode(setup):
    from stages.model.video_inputs import encode_sample

    processor, cache, row, _ = setup
    fresh = encode_sample(processor, row)
    assert same(cache.encode_sample(processor, row), fresh) and (cache.hits, cache.misses) == (0, 1)
    assert same(cache.encode_sample(processor, row), fresh) and (cache.hits, cache.misses) == (1, 1)


def test_what_changes_the_inputs_changes_the_key(setup):
    from transformers import AutoProcessor

    processor, cache, row, model_dir = setup
    cache.encode_sample(processor, row)
    other = AutoProcessor.from_pretrained(model_dir)
    other.video_processor.image_mean = [0.5, 0.5, 0.5]
    cache.encode_sample(other, row)
    cache.encode_sample(processor, {**row, "fps": 1.0})
    cache.encode_sample(processor, {**row, "frame_times": [i / 2 + 0.1 for i in range(8)]})
    cache.encode_sample(processor, {**row, "prompt": "Where is it?"})
    assert (cache.hits, cache.misses) == (0, 5)
    frames = np.load(row["frames"])
    np.save(row["frames"], frames[::-1].copy())  # a rewritten frames file (new mtime)
    st = os.stat(row["frames"])
    os.utime(row["frames"], ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    cache.encode_sample(processor, row)
    assert cache.misses == 6


def test_a_tokenizer_with_the_same_name_and_size_but_other_ids_changes_the_key(setup, tmp_path):
    """A retrained tiny base keeps the path and the vocabulary size; keyed on those, the cache once served one
    model's entries (another tokenizer's ids) to the next (the demo's candidate answered 'C' to every task)."""
    import json

    from transformers import AutoProcessor

    processor, cache, row, model_dir = setup
    cache.encode_sample(processor, row)
    other_dir = tmp_path / "same-name"
    shutil.copytree(model_dir, other_dir)
    tok = json.loads((other_dir / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]  # two ordinary tokens swap ids: same size, other ids
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other_dir / "tokenizer.json").write_text(json.dumps(tok))
    other = AutoProcessor.from_pretrained(other_dir)
    other.tokenizer.name_or_path = processor.tokenizer.name_or_path
    assert len(other.tokenizer) == len(processor.tokenizer)
    cache.encode_sample(other, row)
    assert (cache.hits, cache.misses) == (0, 2)
    assert same(cache.encode_sample(AutoProcessor.from_pretrained(model_dir), row), cache.encode_sample(processor, row))
    assert cache.hits == 2


def test_a_torn_entry_is_recomputed(setup):
    from stages.model.video_inputs import encode_sample, video_message

    processor, cache, row, _ = setup
    cache.encode_sample(processor, row)
    path = cache.root / f"{cache.key(processor, row, video_message(row['prompt']))}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    assert same(cache.encode_sample(processor, row), encode_sample(processor, row)) and cache.misses == 2
    assert same(cache.encode_sample(processor, row), encode_sample(processor, row)) and cache.hits == 1
