"""train.weight_ema (stages/rl/weight_ema.py): the average's arithmetic, the swap validation uses, the checkpoint
round trip; only trainable parameters take part."""
import pytest
import torch

from stages.rl.weight_ema import WeightEma


def model():
    torch.manual_seed(0)
    m = torch.nn.Linear(2, 2)
    m.bias.requires_grad_(False)
    return m


def test_average_follows_the_formula_over_steps_and_leaves_frozen_weights_out():
    m = model()
    w0 = m.weight.detach().clone()
    ema = WeightEma(m, 0.5)
    assert set(ema.shadow) == {"weight"}
    expected = w0.clone()
    for k in range(3):
        with torch.no_grad():
            m.weight.add_(float(k + 1))
        ema.update()
        expected = 0.5 * expected + 0.5 * m.weight.detach()
    assert torch.allclose(ema.shadow["weight"], expected)
    # by hand: weights w0+1, w0+3, w0+6 -> 1/8 w0 + 1/8 (w0+1) + 1/4 (w0+3) + 1/2 (w0+6) = w0 + 3.875
    assert torch.allclose(ema.shadow["weight"], w0 + 3.875)


def test_swapped_holds_the_average_inside_and_restores_the_weights_after():
    m = model()
    ema = WeightEma(m, 0.9)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update()
    current = m.weight.detach().clone()
    with ema.swapped():
        assert torch.allclose(m.weight, ema.shadow["weight"]) and not torch.allclose(m.weight, current)
    assert torch.equal(m.weight, current)
    ema.copy_to_model()
    assert torch.allclose(m.weight, ema.shadow["weight"])


def test_checkpoint_round_trip_and_a_missing_file_is_a_clear_error(tmp_path):
    m = model()
    ema = WeightEma(m, 0.9)
    with torch.no_grad():
        m.weight.mul_(3.0)
    ema.update()
    ema.save(tmp_path)
    other = WeightEma(model(), 0.9)
    other.load(tmp_path)
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(FileNotFoundError, match="no weight average"):
        other.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="decay"):
        WeightEma(m, 1.0)
