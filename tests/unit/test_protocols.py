"""The two scoring protocols (docs/tasks.md, "Two scoring protocols"): every difference scored under both, with
values worked out by hand from the upstream code's behaviour, as read in:

- VideoChat-R1 (OpenGVLab/VideoChat-R1, commit 73b2ea9) src_eval/evaluate_grounding.py: parse_timestamp_output,
  process_work_items (tg); src_eval/evaluate_gqa.py: extract_characters_regex, is_valid_two_d_list_format,
  compute_iou, process_work_items (gqa); src_eval/evaluate_track.py: is_valid_list_of_lists, calculate_iou,
  average_overlap, process_work_items (tracking); src_eval/evaluate_qa.py (qa letters).
- NExT-GQA (doc-doc/NExT-GQA) code/TempGQA/eval_ground.py: get_tIoU, eval_ground (IoU, IoP, Acc@GQA).
"""
from __future__ import annotations

import json

import pytest

from videorft import cli
from stages import tasks as T
from stages.evaluate import sample_table
from stages.params import EvaluateParams
from stages.score import score_predictions

BOTH = ("ours", "upstream")


def metrics(task: str, text: str, solution: dict, protocol: str) -> dict:
    return T.sample_metrics(task, text, solution, protocol)


# ---------------------------------------------------------------- NExT-GQA IoP / IoU: official in both protocols

# NExT-GQA val 8132842161_2 (shared/data/annotation-samples/nextgqa_val_head.json): answer (D), four gold segments
GQA_MULTI = {"answer": "(D)", "glue": [[0.0, 12.1], [14.4, 21.8], [27.4, 29.6], [30.7, 36.9]]}


@pytest.mark.parametrize("protocol", BOTH)
def test_iop_takes_the_best_gold_segment(protocol):
    # eval_ground.py: max over gold segments of get_tIoU(loc, span); the whole video [0, 36.9] as the prediction:
    # best segment [0, 12.1]: IoU = IoP = 12.1 / 36.9 = 0.328 (merged gold would give 27.9 / 36.9 = 0.756)
    row = metrics("gqa", "<think>t</think><answer>D</answer><glue>[(0.0, 36.9)]</glue>", GQA_MULTI, protocol)
    assert row["iop"] == pytest.approx(12.1 / 36.9) and row["seg_iou"] == pytest.approx(12.1 / 36.9)
    assert row["evidence_iou"] == pytest.approx(27.9 / 36.9)  # VideoChat-R1's union IoU (compute_iou): unchanged
    agg = T.aggregate("gqa", [row])
    assert agg["Acc@GQA"] == 0.0  # right letter, but IoP 0.328 < 0.5 (the merged 0.756 passed)
    assert (agg["IoP@0.3"], agg["IoP@0.5"], agg["IoU@0.3"], agg["IoU@0.5"]) == (1.0, 0.0, 1.0, 0.0)
    assert agg["seg_mIoU"] == pytest.approx(12.1 / 36.9) and agg["evidence_mIoU"] == pytest.approx(27.9 / 36.9)


@pytest.mark.parametrize("protocol", BOTH)
def test_iop_and_iou_are_maximised_separately(protocol):
    # eval_ground.py keeps max_tIoU and max_tIoP apart: [20, 22] against [0, 21] and [21.5, 22]:
    # IoU 1/22 or 0.5/2 -> 0.25 (second); IoP 1/2 or 0.5/2 -> 0.5 (first)
    row = metrics("gqa", "<answer>A</answer><glue>[(20, 22)]</glue>",
                  {"answer": "A", "glue": [[0, 21], [21.5, 22]]}, protocol)
    assert (row["seg_iou"], row["iop"]) == pytest.approx((0.25, 0.5))
    assert T.aggregate("gqa", [row])["Acc@GQA"] == 1.0


@pytest.mark.parametrize("protocol", BOTH)
def test_zero_length_prediction_follows_the_official_rule(protocol):
    # get_tIoU: span[0] == span[-1] -> (0, 1) if loc[0] <= span[0] <= loc[1] else (0, 0); ends included
    gold = {"answer": "B", "glue": [[10.0, 20.0], [30.0, 40.0]]}
    inside = metrics("gqa", "<answer>B</answer><glue>[(35.0, 35.0)]</glue>", gold, protocol)
    on_end = metrics("gqa", "<answer>B</answer><glue>[(20.0, 20.0)]</glue>", gold, protocol)
    outside = metrics("gqa", "<answer>B</answer><glue>[(25.0, 25.0)]</glue>", gold, protocol)
    assert (inside["iop"], inside["seg_iou"], inside["evidence_iou"]) == (1.0, 0.0, 0.0)
    assert (on_end["iop"], outside["iop"]) == (1.0, 0.0)
    assert T.aggregate("gqa", [inside, outside])["Acc@GQA"] == 0.5


def test_segment_iou_iop_of_several_spans_and_points():
    from stages.tasks.common import segment_iou_iop

    # a span list is read as its union P: [(0, 2), (4, 6)] vs [1, 5]: |P n g| = 2, |P| = 4, |P u g| = 6
    assert segment_iou_iop([[0, 2], [4, 6]], [[1, 5]]) == pytest.approx((2 / 6, 2 / 4))
    # points only: IoP 1 when one gold segment holds all of them
    assert segment_iou_iop([[3, 3], [4, 4]], [[0, 5]]) == (0.0, 1.0)
    assert segment_iou_iop([[3, 3], [8, 8]], [[0, 5], [7, 9]]) == (0.0, 0.0)
    assert segment_iou_iop([], [[0, 5]]) == (0.0, 0.0)  # no evidence


# ---------------------------------------------------------------- gqa: which block, letters, glue syntax

GQA = {"answer": "(C)", "glue": [[10.0, 20.0]]}


def test_gqa_first_or_last_glue_block():
    # evaluate_gqa.py: re.search(r'<glue>(.*?)</glue>', ans, re.DOTALL): the FIRST block; ours: the last
    text = "<answer>C</answer><glue>[(10.0, 20.0)]</glue> wait, <glue>[(15.0, 25.0)]</glue>"
    ours, upstream = metrics("gqa", text, GQA, "ours"), metrics("gqa", text, GQA, "upstream")
    assert ours["evidence_iou"] == pytest.approx(5 / 15) and ours["iop"] == pytest.approx(0.5)
    assert upstream["evidence_iou"] == 1.0 and upstream["iop"] == 1.0
    assert T.parse("gqa", text, "upstream")["glue"] == [[10.0, 20.0]]


@pytest.mark.parametrize("answer, ours, upstream", [
    # extract_characters_regex: lead-ins deleted, then the first capital A-G anywhere
    ("Based on the video, C", "C", "B"),
    ("The answer is C", "C", "C"),
    ("c", "C", None),  # no capital: "" upstream
    ("Because of the dog, E", "E", "B"),
    ("(C) show him the watch", "C", "C"),
])
def test_letters(answer, ours, upstream):
    text = f"<answer>{answer}</answer><glue>[(10.0, 20.0)]</glue>"
    assert T.parse("gqa", text, "ours")["answer"] == ours
    assert T.parse("gqa", text, "upstream")["answer"] == upstream
    assert T.parse("qa", f"<answer>{answer}</answer>", "upstream") == upstream  # evaluate_qa.py: the same reading
    assert metrics("gqa", text, GQA, "upstream")["correct"] == float(upstream == "C")


@pytest.mark.parametrize("glue, ours, upstream", [
    ("[(10.0, 20.0)]", 1.0, 1.0),
    ("[[10.0, 20.0]]", 1.0, 0.0),  # lists are not tuples: is_valid_two_d_list_format says no
    ("[( 10.0, 20.0 )]", 1.0, 0.0),  # no space inside the parentheses upstream
    ("[(10.0 , 20.0)]", 1.0, 0.0),  # nor before a comma
    (" [(10.0, 20.0)]", 1.0, 0.0),  # nor before the list
    ("[(10.0, 20.0),]", 1.0, 1.0),  # a trailing comma is fine in both
    ("[(10, 15), (15, 20)]", 1.0, 1.0),  # touching spans merge in both
    ("[(20.0, 10.0)]", 0.0, 0.0),  # inverted: unreadable in both
    ("[]", 0.0, 0.0),  # ours: no readable list; upstream: valid, IoU 0 (the gold has length)
])
def test_glue_syntax(glue, ours, upstream):
    text = f"<answer>C</answer><glue>{glue}</glue>"
    assert metrics("gqa", text, GQA, "ours")["evidence_iou"] == ours
    assert metrics("gqa", text, GQA, "upstream")["evidence_iou"] == upstream


def test_upstream_empty_union_scores_one():
    # compute_iou: union == 0 -> 1.0 (only reachable with zero-length gold); ours: 0
    gold = {"answer": "C", "glue": [[5.0, 5.0]]}
    text = "<answer>C</answer><glue>[(5.0, 5.0)]</glue>"
    assert metrics("gqa", text, gold, "upstream")["evidence_iou"] == 1.0
    assert metrics("gqa", text, gold, "ours")["evidence_iou"] == 0.0


# ---------------------------------------------------------------- tg parsing

TG = {"timestamps": [14.0, 18.0]}


@pytest.mark.parametrize("text, ours, upstream", [
    # parse_timestamp_output: last r"(\d+\.?\d*) (to|and) (\d+\.?\d*)" in the whole output
    ("<answer>14.09 to 17.95</answer>", [14.09, 17.95], [14.09, 17.95]),
    ("<answer>14.09 seconds to 17.95 seconds</answer>", [14.09, 17.95], None),  # a unit before "to": no match
    ("<answer>14.09s to 17.95s</answer>", [14.09, 17.95], None),
    ("<answer>17.17to30.93</answer>", [17.17, 30.93], None),  # exactly one space each side upstream
    ("<answer>17.17  to 30.93</answer>", [17.17, 30.93], None),
    ("<answer>14 TO 18</answer>", [14.0, 18.0], None),  # lowercase only upstream
    ("<think>it is from 14 to 18</think><answer>not sure</answer>", None, [14.0, 18.0]),  # think text counts
    ("14 to 18", None, [14.0, 18.0]),  # no tags needed upstream
    ("<answer>14 to 18</answer> or maybe 3 to 5", [14.0, 18.0], [3.0, 5.0]),  # last pair of the whole text
    ("<answer>6.22e-01 to 7</answer>", None, [1.0, 7.0]),  # "01 to 7"
    ("<answer>-3 to 5</answer>", None, [3.0, 5.0]),  # the sign is skipped upstream
    ("<answer>1.2.3 to 4</answer>", None, [2.3, 4.0]),
    ("<answer>12. to 17</answer>", None, [12.0, 17.0]),
    ("<answer>18 to 14</answer>", None, [18.0, 14.0]),  # inverted: read upstream, IoU 0 in both
    ("<answer>1 to 2 to 3</answer>", [1.0, 2.0], [1.0, 2.0]),  # findall does not reuse the 2
])
def test_tg_parsing(text, ours, upstream):
    assert T.parse("tg", text, "ours") == ours
    assert T.parse("tg", text, "upstream") == upstream


def test_tg_iou_under_both_protocols():
    # process_work_items: iou = max((min(e, ep) - max(s, sp)) / (max(e, ep) - min(s, sp)), 0)
    text = "<answer>14.09 seconds to 17.95 seconds</answer>"
    assert metrics("tg", text, TG, "ours")["iou"] == pytest.approx((17.95 - 14.09) / 4.0)
    assert metrics("tg", text, TG, "upstream") == {"iou": 0.0, "parsed": False}
    spaced = "<answer>17.17to30.93</answer>"
    assert metrics("tg", spaced, {"timestamps": [17.17, 30.93]}, "ours")["iou"] == pytest.approx(1.0)
    assert metrics("tg", spaced, {"timestamps": [17.17, 30.93]}, "upstream")["iou"] == 0.0
    assert metrics("tg", "<answer>18 to 14</answer>", TG, "upstream") == {"iou": 0.0, "parsed": True}
    think = "<think>from 14 to 16</think><answer>unsure</answer>"
    assert metrics("tg", think, TG, "upstream")["iou"] == pytest.approx(0.5)
    assert metrics("tg", think, TG, "ours")["iou"] == 0.0


# ---------------------------------------------------------------- tracking

BOX = [0.1, 0.2, 0.5, 0.6]
TRACK = {"boxes": [BOX] * 8}


def boxes_text(box: str, n: int = 8) -> str:
    return "[" + ", ".join([box] * n) + "]"


@pytest.mark.parametrize("answer, ours, upstream", [
    (boxes_text("[0.1, 0.2, 0.5, 0.6]"), 1.0, 1.0),
    (boxes_text("(0.1, 0.2, 0.5, 0.6)"), 1.0, 0.0),  # tuple boxes: is_valid_list_of_lists wants lists
    (boxes_text("[+0.1, 0.2, 0.5, 0.6]"), 0.0, 1.0),  # literal_eval reads "+0.1"
    (boxes_text("[1.0e-01, 2e-1, 0.5, 0.6]"), 0.0, 1.0),  # and exponents
    (boxes_text("[0.1, 0.2, 0.5, 0.6]").replace("], ", "],\n"), 1.0, 1.0),  # newlines
    (boxes_text("[0.1, 0.2, 0.5, 0.6]", 7), 0.0, 0.0),  # 7 boxes: 0 in both
    (boxes_text("[0.5, 0.6, 0.1, 0.2]"), 0.0, 0.0),  # inverted boxes: no intersection in both
])
def test_tracking_parsing(answer, ours, upstream):
    text = f"<answer>{answer}</answer>"
    assert metrics("tracking", text, TRACK, "ours")["miou"] == pytest.approx(ours)
    assert metrics("tracking", text, TRACK, "upstream")["miou"] == pytest.approx(upstream)


def test_tracking_first_or_last_answer_block():
    # evaluate_track.py: re.search(r'<answer>(.*?)</answer>', ans, re.DOTALL): the first block; ours: the last
    far = "[0.6, 0.6, 0.9, 0.9]"  # no overlap with BOX
    text = f"<answer>{boxes_text(far)}</answer> no, <answer>{boxes_text('[0.1, 0.2, 0.5, 0.6]')}</answer>"
    assert metrics("tracking", text, TRACK, "ours")["miou"] == 1.0
    assert metrics("tracking", text, TRACK, "upstream")["miou"] == 0.0
    # upstream SR@t: not computed by VideoChat-R1; ours over the same IoUs (AO is what evaluate_track prints)
    assert T.aggregate("tracking", [metrics("tracking", text, TRACK, "upstream")])["AO"] == 0.0


# ---------------------------------------------------------------- the protocol is recorded and validated


def test_protocol_is_a_documented_param_and_is_recorded():
    assert EvaluateParams().protocol == "ours"
    assert EvaluateParams(protocol="upstream").protocol == "upstream"
    with pytest.raises(ValueError):
        EvaluateParams(protocol="official")
    with pytest.raises(ValueError, match="unknown scoring protocol"):
        T.parse("tg", "1 to 2", "official")
    rows = [{"id": "q", "task": "tg", "solution": TG}]
    text = ["<answer>14.09 seconds to 17.95 seconds</answer>"]
    for protocol, iou in (("ours", 3.86 / 4.0), ("upstream", 0.0)):
        agg, records = T.score_outputs(rows, text, protocol=protocol)
        assert agg["tg"]["mIoU"] == pytest.approx(iou)
        assert sample_table(records, records, "sha", protocol)["protocol"] == protocol
        report, _ = score_predictions("tg", rows, {"q": text[0]}, protocol=protocol)
        assert report["protocol"] == protocol and report["metrics"]["mIoU"] == pytest.approx(iou)


def test_score_cli_protocol(tmp_path, capsys):
    ann = tmp_path / "charades.json"
    ann.write_text(json.dumps({"VID01": {"duration": 30.0, "timestamps": [[14.0, 18.0]], "sentences": ["a"]}}))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "VID01#0", "output": "<answer>14 to 18, no: 17.17to30.93</answer>"}) + "\n")
    out = {}
    for protocol in BOTH:
        rc = cli.main(["score", "--task", "tg", "--annotations", str(ann), "--predictions", str(preds),
                       "--protocol", protocol])
        assert rc == 0
        out[protocol] = json.loads(capsys.readouterr().out)
    assert out["ours"]["protocol"] == "ours" and out["upstream"]["protocol"] == "upstream"
    # ours reads the last pair, 17.17 to 30.93: IoU 0.83 / 16.93; upstream cannot read it and takes 14 to 18
    assert out["ours"]["metrics"]["mIoU"] == pytest.approx(0.83 / 16.93)
    assert out["upstream"]["metrics"]["mIoU"] == 1.0


# ---------------------------------------------------------------- the remaining examples of docs/tasks.md's table


@pytest.mark.parametrize("answer, gold, ours, upstream", [
    ("6.22e-01 to 7", [0.5, 7.0], 0.0, 6 / 6.5),  # T6: upstream reads 1 to 7
    ("-3 to 5", [3.0, 5.0], 0.0, 1.0),
    ("1.2.3 to 4", [2.3, 4.0], 0.0, 1.0),
    ("12. to 17", [12.0, 17.0], 0.0, 1.0),
    ("5 to 5", [5.0, 5.0], 0.0, 0.0),  # T8: upstream divides by zero and skips the sample; 0 here in both
])
def test_tg_table_examples(answer, gold, ours, upstream):
    text = f"<answer>{answer}</answer>"
    assert metrics("tg", text, {"timestamps": gold}, "ours")["iou"] == pytest.approx(ours)
    assert metrics("tg", text, {"timestamps": gold}, "upstream")["iou"] == pytest.approx(upstream)


def test_gqa_and_tracking_table_examples():
    empty = "<answer>C</answer><glue>[]</glue>"  # G4: readable (and empty) upstream only; 0 in both
    assert T.parse("gqa", empty, "ours")["glue"] is None and T.parse("gqa", empty, "upstream")["glue"] == []
    for protocol in BOTH:
        row = metrics("gqa", empty, GQA, protocol)
        assert (row["evidence_iou"], row["iop"], row["seg_iou"]) == (0.0, 0.0, 0.0)
        # K4: Python literals that are not plain decimals are not read in either protocol
        assert metrics("tracking", f"<answer>{boxes_text('[0x0, 0, 1, 1]')}</answer>", TRACK, protocol)["miou"] == 0


# ---------------------------------------------------------------- differential: the upstream readings vs the scripts'
# own expressions, on many short random strings (where their backtracking costs nothing). The oracles restate the
# behaviour read in the scripts named at the top of this file.


def test_upstream_tg_reading_equals_the_scripts_regex():
    import random
    import re

    oracle = re.compile(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)")  # parse_timestamp_output, last findall match
    rng = random.Random(0)
    alphabet = list("0123456789" * 3) + list(". .-e") + [" to ", " and ", "to", " ", "x", "\n", " TO "]
    for _ in range(20000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        found = oracle.findall(s)
        expected = [float(found[-1][0]), float(found[-1][2])] if found else None
        assert T.parse("tg", s, "upstream") == expected, s


def test_upstream_glue_reading_equals_the_scripts_validation():
    import ast
    import random
    import re

    # is_valid_two_d_list_format: this pattern with re.match, then literal_eval: tuples of 2 with start <= end
    oracle = re.compile(r"^\[(\(\d+(\.\d+)?,\s*\d+(\.\d+)?\)(,\s*\(\d+(\.\d+)?,\s*\d+(\.\d+)?\))*(,)?|)\]$")
    rng = random.Random(0)
    alphabet = list("0123456789") + list("[](), .\n") + [", ", "(1, 2)", "(3.5, 4)"]
    for _ in range(20000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        expected = None
        if oracle.match(s):
            spans = ast.literal_eval(s)
            if all(a <= b for a, b in spans):
                expected = [[float(a), float(b)] for a, b in spans]
        assert T.parse("gqa", f"<glue>{s}</glue>", "upstream") == (
            None if expected is None else {"answer": None, "glue": expected}), s


def test_upstream_box_reading_equals_literal_eval_on_decimal_literals():
    import ast
    import math
    import random

    def oracle(s):  # is_valid_list_of_lists, then numbers; booleans and infinities are not read (docs K4)
        try:
            data = ast.literal_eval(s.replace("\n", ""))
        except (ValueError, SyntaxError):
            return None
        if not isinstance(data, list) or len(data) != 8 or not all(isinstance(b, list) and len(b) == 4 for b in data):
            return None
        values = [v for b in data for v in b]
        if not all(type(v) in (int, float) and math.isfinite(v) for v in values):
            return None
        return [[float(v) for v in b] for b in data]

    rng = random.Random(0)
    # decimal literals only: hex and underscores are read by literal_eval and not here (docs/tasks.md, K4)
    numbers = ["0.1", "+0.2", "-0.3", "1e-1", "6.22e-01", ".5", "1.", "0", "1", "07", "00", "007.5", "0e1",
               "+ 0.5", "- 1", "--1", "1e999", "0.25E+1", "00.5", "-07", "True", "'a'"]
    for _ in range(3000):
        boxes = []
        for _ in range(rng.choice([8, 8, 8, 7])):
            opening, closing = ("(", ")") if rng.random() < 0.05 else ("[", "]")
            sep = rng.choice([", ", ",", " , ", ",\n"])
            boxes.append(opening + sep.join(rng.choice(numbers) for _ in range(4)) + rng.choice(["", ",", " "])
                         + closing)
        s = rng.choice(["", " ", "\n"]) + "[" + ", ".join(boxes) + rng.choice(["", ",", " "]) + "]"
        assert T.parse("tracking", f"<answer>{s}</answer>", "upstream") == oracle(s), s
