"""Per-box credit (train.box_credit, stages/rl/box_credit.py): where each box of a tracking answer is, which tokens
belong to it, and the per-token advantages, checked against numbers worked out by hand."""
import pytest
import torch

from stages import tasks as T
from stages.rl.box_credit import corrections, token_advantages, token_owner

GOLD = {"boxes": [[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]]}


def test_part_spans_finds_each_box_of_the_last_answer_and_its_iou():
    text = "<answer>[[0.9, 0.9, 1.0, 1.0]]</answer> <answer>[[0.10, 0.10, 0.30, 0.30], (0.2,0.2,0.3,0.3)]</answer>"
    part, spans, values = T.part_spans("tracking", text, GOLD)
    assert part == "iou"
    assert [text[a:b] for a, b in spans] == ["[0.10, 0.10, 0.30, 0.30]", "(0.2,0.2,0.3,0.3)"]
    assert values == pytest.approx([1.0, 0.25])  # 0.1x0.1 inside 0.2x0.2
    assert sum(values) / 2 == pytest.approx(T.score("tracking", text, GOLD, think=False)["iou"])


@pytest.mark.parametrize("text", ["<answer>[[0.1, 0.1, 0.3, 0.3]]</answer>",  # one box for two frames
                                  "<answer>[[0.1, 0.1, 0.3], [0.2, 0.2, 0.4, 0.4]]</answer>",
                                  "no answer"])
def test_part_spans_is_none_when_the_iou_part_is_zero(text):
    assert T.part_spans("tracking", text, GOLD) is None
    assert T.score("tracking", text, GOLD, think=False)["iou"] == 0.0


def test_tasks_without_the_hook_give_none():
    assert T.part_spans("tg", "<answer>1.0 to 2.0</answer>", {"span": [1.0, 2.0]}) is None


def test_token_owner_assigns_tokens_inside_one_span_only():
    pieces = ["<answer>", "[[", "0.1", ",", " 0.2", "],", " [", "0.3", "]]", "</answer>"]
    text = "".join(pieces)
    spans = [(text.index("[0.1"), text.index("],") + 1), (text.index("[0.3"), text.index("]]") + 1)]
    # "[[" touches box 0 only; "]," ends box 0; " [" opens box 1; "]]" closes box 1 and the list
    assert token_owner(pieces, spans) == [-1, 0, 0, 0, 0, 0, 1, 1, 1, -1]
    assert token_owner([text], spans) == [-1]  # one token over two boxes: no box's own


def test_corrections_by_hand():
    # three answers of one group, two boxes; the third could not be read (IoU 0 in both boxes)
    got = corrections([[1.0, 0.0], [0.0, 0.0], None], 2)
    # box means (1/3, 0); parts (0.5, 0, 0), mean 1/6
    assert got[0] == pytest.approx([(1 - 1 / 3) - (0.5 - 1 / 6), (0 - 0) - (0.5 - 1 / 6)])
    assert got[1] == pytest.approx([(0 - 1 / 3) - (0 - 1 / 6), 0 - (0 - 1 / 6)])
    assert got[2] is None
    assert all(sum(c) == pytest.approx(0.0) for c in got if c is not None)  # an answer's corrections cancel


def test_token_advantages_add_the_scaled_correction_on_box_tokens_only():
    adv = torch.tensor([0.5, -0.5])
    owners = [[-1, 0, 0, 1, -1], None]
    corr = [[0.2, -0.2], None]
    out = token_advantages(adv, owners, corr, scale=torch.tensor([0.4, 0.4]), weight=[1.0, 1.0], length=6)
    assert out.shape == (2, 6)
    assert out[0].tolist() == pytest.approx([0.5, 0.5 + 0.5, 0.5 + 0.5, 0.5 - 0.5, 0.5, 0.5])
    assert out[1].tolist() == pytest.approx([-0.5] * 6)
    half = token_advantages(adv, owners, corr, torch.tensor([0.4, 0.4]), [0.5, 1.0], 6)
    assert half[0, 1].item() == pytest.approx(0.5 + 0.25)  # the part's reward weight scales its correction
