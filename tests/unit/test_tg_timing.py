"""bench/tg_timing.py: a late but well-read set of spans scores low as answered, perfectly once moved by its mean
error, and worse given to another query (hand-computed)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from tg_timing import iou, timing  # noqa: E402


def test_a_constant_lateness_is_a_bias_that_moving_removes():
    golds = [[0.0, 2.0], [4.0, 6.0]]
    spans = [[1.0, 3.0], [5.0, 7.0]]  # both 1 s late at both ends
    t = timing(spans, golds)
    assert t["start_error"] == pytest.approx(1.0) and t["end_error"] == pytest.approx(1.0)
    assert t["mIoU"] == pytest.approx(1 / 3)  # overlap 1 s of a 3 s union, each
    assert t["moved_mIoU"] == pytest.approx(1.0)
    assert t["moved_next_query_mIoU"] == pytest.approx(0.0)  # [0, 2] against [4, 6] and back


def test_unanswered_queries_count_as_zero_in_the_answered_mIoU_only():
    t = timing([[0.0, 2.0], None], [[0.0, 2.0], [4.0, 6.0]])
    assert t["answered"] == 1 and t["queries"] == 2
    assert t["mIoU"] == pytest.approx(0.5)  # as evaluate scores: a missing answer is 0
    assert t["moved_mIoU"] == pytest.approx(1.0)
    assert timing([None], [[0.0, 1.0]]) == {"answered": 0, "queries": 1}
    assert iou([0.0, 1.0], [2.0, 3.0]) == 0.0 and iou([1.0, 1.0], [1.0, 1.0]) == 0.0
