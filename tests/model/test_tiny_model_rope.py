"""tiny_model.rope_theta: the knob reaches the built config, and the fact it exists for (docs/base-model.md)."""
import pytest

from stages.params import TinyModelParams
from stages.model.tiny import _mrope, build_config, build_qwen3_config, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(1024)


def _theta(config) -> float:
    return config.text_config.rope_parameters["rope_theta"]


def test_rope_theta_defaults_to_the_family_and_is_settable(tokenizer):
    assert _theta(build_config(tokenizer, TinyModelParams())) == 1e6
    assert _theta(build_qwen3_config(tokenizer, TinyModelParams(family="qwen3_vl"))) == 5e6
    assert _theta(build_config(tokenizer, TinyModelParams(rope_theta=10.0))) == 10.0
    assert _theta(build_qwen3_config(tokenizer, TinyModelParams(family="qwen3_vl", rope_theta=10.0))) == 10.0


def test_width_section_is_blind_at_the_default_base():
    # Qwen2.5-VL's M-RoPE gives width the last (lowest) frequencies theta**(-2i/head_dim): at the shipped base's
    # head_dim 32 and theta 1e6 the fastest of them turns by under 0.002 rad per grid column
    head_dim = 128 // 4
    t, h, w = _mrope(head_dim)
    fastest_width = 1e6 ** (-2 * (t + h) / head_dim)
    assert (t, h, w) == (4, 6, 6)
    assert fastest_width < 0.002
    assert 10.0 ** (-2 * (t + h) / head_dim) > 0.2  # theta 10: a grid column turns by about 0.24 rad
