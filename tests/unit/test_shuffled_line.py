"""stages/blind.shuffled_line: a model's own answers scored against other samples of their task, worked by hand."""
from stages.blind import shuffled_line
from stages.evaluate import follows_sample

# three tg queries on 8-second videos; their events: early, middle, late
ROWS = [{"id": f"q{i}", "task": "tg", "solution": {"timestamps": ts}}
        for i, ts in enumerate([[0.0, 2.0], [3.0, 5.0], [6.0, 8.0]])]


def answer(a: float, b: float) -> str:
    return f"<think>x</think> <answer>{a:.2f} to {b:.2f}</answer>"


def test_a_constant_answer_scores_the_same_on_every_permutation():
    line = shuffled_line(ROWS, [answer(3.0, 5.0)] * 3, rounds=20, seed=0)
    # by hand: IoU 0 with the early and the late event, 1 with the middle one: mIoU 1/3 on any permutation
    assert line["tg"]["mIoU"] == {"mean": 0.333333, "lo": 0.333333, "hi": 0.333333}
    assert follows_sample(1 / 3, line["tg"]["mIoU"]) == "NO sign the answers follow the sample"


def test_answers_that_follow_their_video_score_above_their_shuffles():
    outputs = [answer(0.0, 2.0), answer(3.0, 5.0), answer(6.0, 8.0)]  # each the gold of its own query
    line = shuffled_line(ROWS, outputs, rounds=200, seed=1)["tg"]["mIoU"]
    # a permutation of 3 answers scores (number of fixed points)/3: 0 (2 of 6), 1/3 (3 of 6) or 1 (1 of 6)
    assert 0.0 <= line["lo"] <= line["mean"] <= line["hi"] <= 1.0
    assert abs(line["mean"] - 1 / 3) < 0.1 and line["lo"] == 0.0
    assert shuffled_line(ROWS, outputs, rounds=200, seed=1) == shuffled_line(ROWS, outputs, rounds=200, seed=1)
    assert follows_sample(0.2, {"mean": 0.3, "lo": 0.25, "hi": 0.35}) == "answers score worse on their own samples"
    assert follows_sample(1.0, {"mean": 0.3, "lo": 0.0, "hi": 0.35}) == "answers follow the sample"


def test_a_gain_made_by_a_constant_answer_is_called_so():
    from stages.evaluate import report

    result = {"candidate": {"metrics": {"tg": {"mIoU": 0.4}}}, "baseline": {"metrics": {"tg": {"mIoU": 0.3}}},
              "intervals": {"tg": {"mIoU": {"delta": 0.1, "lo": 0.05, "hi": 0.15}}}, "interval": {"level": 0.95},
              "shuffled": {"candidate": {"tg": {"mIoU": {"mean": 0.4, "lo": 0.4, "hi": 0.4}}}}}
    lines = report(result)
    assert lines[1] == ("  tg mIoU: learned; the answers do not follow the sample (a better answer for every "
                        "sample, not a better look) (+0.100 [+0.050, +0.150])")
    assert lines[-1] == "Learned beyond noise (95% interval): tg mIoU (answers do not follow the sample)"
    result["shuffled"]["candidate"]["tg"]["mIoU"] = {"mean": 0.3, "lo": 0.25, "hi": 0.35}
    assert report(result)[-1] == "Learned beyond noise (95% interval): tg mIoU"
