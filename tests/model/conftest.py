import pytest


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
    """A tiny Qwen3-VL (patch 16, timestamps in the text, deepstack), built offline once per session."""
    from stages.params import TinyModelParams
    from stages.model.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-qwen3")
    build_tiny_model(TinyModelParams(family="qwen3_vl"), out)
    return str(out)


@pytest.fixture(params=["qwen2_5_vl", "qwen3_vl"])
def family_model_dir(request):
    """(family, model dir) for tests every supported family must pass."""
    name = "tiny_model_dir" if request.param == "qwen2_5_vl" else "tiny_qwen3_dir"
    return request.param, request.getfixturevalue(name)


@pytest.fixture(scope="session")
def answering_model(tiny_model_dir, tmp_path_factory):
    """The tiny Qwen2.5-VL rewired into a prompt-blind sampler of answer-shaped text (tests/model/_multirank_worker.py),
    saved like a checkpoint: the real task rewards then vary, so GRPO steps really train."""
    from _multirank_worker import make_bigram_sampler
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("answering-model")
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    make_bigram_sampler(model, processor.tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)
