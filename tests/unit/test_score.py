"""`videorft score` on the REAL upstream annotation samples with hand-written predictions: perfect, partly right,
garbage, missing, unknown ids and unreadable lines. Expected metrics are worked out by hand from the files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from videorft import cli
from stages.score import read_predictions, score_predictions

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "annotation-samples"
CHARADES = SAMPLES / "charades_train_head.json"
NEXTGQA = SAMPLES / "nextgqa_val_head.json"
GOT = SAMPLES / "got_val_head.json"
real = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real annotation samples not found at {SAMPLES}")


def think(answer: str) -> str:
    return f"<think>I watched it.</think>\n{answer}"


def write_predictions(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def score(capsys, *args) -> tuple[int, dict, str]:
    rc = cli.main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else {}), err


def score_all(capsys, tmp_path, task: str, annotations: Path, lines: list, samples: int, predicted: int,
              protocol: str = "ours") -> dict:
    """Score `lines`; every one of the `samples` annotated samples counts, those without a line are missing."""
    rc, report, _ = score(capsys, "--task", task, "--annotations", annotations, "--predictions",
                          write_predictions(tmp_path / "p.jsonl", lines), "--protocol", protocol)
    assert rc == 0
    assert report["metrics"]["count"] == samples and report["missing"]["count"] == samples - predicted
    return report


# ---------------------------------------------------------------- temporal grounding (Charades-STA, 48 queries)

TG_LINES = [
    {"id": "AO8RW#0", "output": think("<answer>0.00 to 6.90</answer>")},  # gold [0, 6.9]: perfect
    {"id": "Y6R7T#0", "output": think("<answer>20.80 to 29.46</answer>")},  # gold [20.8, 30.0] clipped to 29.46
    {"id": "IBIWF#0", "output": "<answer>0.00 to 7.25</answer>"},  # gold [0, 14.5]: IoU 0.5, no think block
    {"id": "7UPGT#0", "output": think("<answer>16.80 to 22.60</answer>")},  # gold [13.9, 19.7]: 2.9 / 8.7
    {"id": "KBPDM#0", "output": "I don't know."},  # garbage
    {"id": "KBPDM#1", "output": think("<answer>11.10 to 0.00</answer>")},  # inverted: 0, format still fine
    "not json at all",  # line 7
    {"id": "KBPDM#2"},  # line 8: no output
    '["AO8RW#0", "x"]',  # line 9: not an object
    {"id": "AO8RW#0", "output": think("<answer>20 to 30</answer>")},  # line 10: repeat, first line wins
    "",  # blank lines are not problems
    {"id": "ZZZZZ#0", "output": think("<answer>1 to 2</answer>")},  # unknown id
]


@real
def test_tg_scores_every_query_and_reports_problems(tmp_path, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", TG_LINES)
    per_sample = tmp_path / "out" / "per_sample.jsonl"
    rc, report, err = score(capsys, "--task", "tg", "--annotations", CHARADES, "--predictions", preds,
                            "--per-sample", per_sample)
    assert rc == 0
    m = report["metrics"]
    n = 48  # 20 videos, 48 sentences; nothing rejected under the default clip policy
    assert m["count"] == n and report["annotations"] == {"file": str(CHARADES), "samples": n, "rejected": []}
    ious = [1.0, 1.0, 0.5, 2.9 / 8.7]
    assert m["mIoU"] == pytest.approx(sum(ious) / n)
    assert (m["R@0.3"], m["R@0.5"], m["R@0.7"]) == pytest.approx((4 / n, 3 / n, 2 / n))
    assert m["parse_rate"] == pytest.approx(4 / n)
    assert report["mean_rewards"] == pytest.approx({"format": 4 / n, "iou": sum(ious) / n})
    assert report["missing"]["count"] == n - 6 and "AO8RW#0" not in report["missing"]["ids"]
    assert "Y6R7T#1" in report["missing"]["ids"] and "KBPDM#2" in report["missing"]["ids"]
    assert report["unknown"] == {"count": 1, "ids": ["ZZZZZ#0"]}
    bad = report["predictions"]["malformed"]
    assert [b["line"] for b in bad] == [7, 8, 9, 10]
    assert "malformed JSON" in bad[0]["reason"] and "'output'" in bad[1]["reason"]
    assert "JSON object" in bad[2]["reason"] and "duplicate id (first on line 1)" in bad[3]["reason"]
    assert report["predictions"]["read"] == 7
    assert "42 of 48 samples have no prediction" in err and "4 unreadable prediction lines" in err

    records = {r["id"]: r for r in map(json.loads, per_sample.read_text().splitlines())}
    assert len(records) == n
    assert records["AO8RW#0"]["parsed"] == [0.0, 6.9] and records["AO8RW#0"]["rewards"] == {"format": 1.0, "iou": 1.0}
    assert records["Y6R7T#0"]["solution"] == {"timestamps": [20.8, 29.46]}
    assert records["IBIWF#0"]["rewards"] == {"format": 0.0, "iou": 0.5}
    assert records["7UPGT#0"]["metrics"]["iou"] == pytest.approx(1 / 3)
    assert records["KBPDM#1"]["parsed"] is None and records["KBPDM#1"]["rewards"] == {"format": 1.0, "iou": 0.0}
    assert records["KBPDM#2"]["missing"] is True and records["KBPDM#2"]["metrics"] == {"iou": 0.0, "parsed": False}


@real
def test_tg_reject_policy_reports_rejected_queries_not_unknown_ids(tmp_path, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", TG_LINES)
    rc, report, _ = score(capsys, "--task", "tg", "--annotations", CHARADES, "--predictions", preds,
                          "--interval-policy", "reject")
    assert rc == 0
    rejected = report["annotations"]["rejected"]
    assert {r["id"] for r in rejected} >= {"Y6R7T#0", "Y6R7T#1", "IGDIE#0"}  # end after the video's duration
    assert all("outside" in r["reason"] for r in rejected)
    n = 48 - len(rejected)
    assert report["metrics"]["count"] == report["annotations"]["samples"] == n
    assert report["unknown"]["ids"] == ["ZZZZZ#0"]  # Y6R7T#0 is known, only not scorable
    assert report["metrics"]["mIoU"] == pytest.approx((1.0 + 0.5 + 2.9 / 8.7) / n)


# ---------------------------------------------------------------- grounded QA (NExT-GQA val, 30 questions)


@real
@pytest.mark.parametrize("protocol", ["ours", "upstream"])
def test_gqa_real_samples(tmp_path, capsys, protocol):
    lines = [
        # gold (C), evidence [13.8, 29.8]: all right
        {"id": "4882821564_1", "output": think("<answer>C</answer>\n<glue>[(13.8, 29.8)]</glue>")},
        # gold (C), 5 spans of 17.5 s in all; [20.9, 26.0] covers 4.0 s of them: union IoU 4/18.6; NExT-GQA's
        # official best segment is [23.8, 26.0]: IoU 2.2/5.1 and IoP 2.2/5.1 (the merged gold's IoP was 4/5.1)
        {"id": "2435100235_7", "output": think("<answer>(C) show him the watch</answer><glue>[(20.9, 26.0)]</glue>")},
        # gold (C): wrong letter, perfect evidence
        {"id": "2834146886_8", "output": think("<answer>A</answer><glue>[(36.9, 44.0)]</glue>")},
        # gold (D): right letter, no evidence (format 0)
        {"id": "8132842161_2", "output": think("<answer>D</answer>")},
        {"id": "4260763967_4", "output": "<answer></answer><glue>[(5, 1)]</glue>"},  # nothing readable
    ]
    n = 30
    report = score_all(capsys, tmp_path, "gqa", NEXTGQA, lines, samples=n, predicted=5, protocol=protocol)
    assert report["protocol"] == protocol  # these outputs read the same under both protocols
    m = report["metrics"]
    assert m["accuracy"] == pytest.approx(3 / n)
    assert m["evidence_mIoU"] == pytest.approx((1 + 4 / 18.6 + 1) / n)
    assert m["seg_mIoU"] == pytest.approx((1 + 2.2 / 5.1 + 1) / n)
    assert m["mIoP"] == pytest.approx((1 + 2.2 / 5.1 + 1) / n)
    assert m["Acc@GQA"] == pytest.approx(1 / n)  # right letter and IoP >= 0.5: the first only
    assert (m["IoU@0.3"], m["IoU@0.5"], m["IoP@0.3"], m["IoP@0.5"]) == pytest.approx((3 / n, 2 / n, 3 / n, 2 / n))
    assert m["parse_rate"] == pytest.approx(4 / n)
    assert report["mean_rewards"] == pytest.approx(
        {"format": 3 / n, "accuracy": 3 / n, "evidence_iou": (1 + 4 / 18.6 + 1) / n})


# ---------------------------------------------------------------- tracking (GOT-10k val, 20 sequences)


@real
def test_tracking_real_samples(tmp_path, capsys):
    got = {Path(x["path"]).name: x["gt"] for x in json.loads(GOT.read_text())}
    # the left 40% of each box: each IoU is 0.4
    narrow = [[x0, y0, x0 + 0.4 * (x1 - x0), y1] for x0, y0, x1, y1 in got["GOT-10k_Val_000157"]]
    lines = [
        {"id": "GOT-10k_Val_000010", "output": think(f"<answer>{json.dumps(got['GOT-10k_Val_000010'])}</answer>")},
        {"id": "GOT-10k_Val_000111", "output": think(f"<answer>{json.dumps(got['GOT-10k_Val_000111'][:7])}</answer>")},
        {"id": "GOT-10k_Val_000157", "output": think(f"<answer>{json.dumps(narrow)}</answer>")},
        {"id": 12345, "output": "an integer id is read as a string, and unknown here"},
    ]
    n = 20
    report = score_all(capsys, tmp_path, "tracking", GOT, lines, samples=n, predicted=3)
    m = report["metrics"]
    assert m["AO"] == pytest.approx((1 + 0 + 0.4) / n)
    assert m["SR@0.5"] == pytest.approx(8 / (8 * n)) and m["SR@0.75"] == pytest.approx(8 / (8 * n))
    assert m["parse_rate"] == pytest.approx(2 / n)  # 7 boxes for 8 frames is not an answer
    assert report["mean_rewards"] == pytest.approx({"format": 2 / n, "iou": (1 + 0.4) / n})
    assert report["unknown"] == {"count": 1, "ids": ["12345"]}


# ---------------------------------------------------------------- multiple-choice QA, think / no-think


def test_qa_and_the_no_think_layout(tmp_path, capsys):
    ann = tmp_path / "mcq.json"
    ann.write_text(json.dumps([
        {"id": "q1", "video": "a/v1.mp4", "question": "what?", "options": ["(A) x", "(B) y"], "answer": "(B)"},
        {"id": "q2", "video": "a/v2.mp4", "question": "who?", "options": ["(A) x", "(B) y"], "answer": "A"},
        {"id": "q3", "video": "a/v3.mp4", "question": "bad", "options": ["(A) x"], "answer": "(C)"},  # rejected
    ]))
    preds = write_predictions(tmp_path / "p.jsonl", [{"id": "q1", "output": "<answer>B</answer>"},
                                                     {"id": "q2", "output": think("<answer>(B)</answer>")},
                                                     {"id": "q3", "output": "<answer>C</answer>"}])
    rc, with_think, _ = score(capsys, "--task", "qa", "--annotations", ann, "--predictions", preds)
    assert rc == 0
    assert with_think["metrics"] == {"count": 2, "accuracy": 0.5, "parse_rate": 1.0}
    assert with_think["mean_rewards"] == {"format": 0.5, "accuracy": 0.5}
    assert [r["id"] for r in with_think["annotations"]["rejected"]] == ["q3"]
    assert with_think["unknown"]["count"] == 0  # a prediction for a rejected annotation is not "unknown"
    rc, no_think, _ = score(capsys, "--task", "qa", "--annotations", ann, "--predictions", preds, "--no-think")
    assert no_think["metrics"] == with_think["metrics"]  # metrics do not depend on the layout
    assert no_think["mean_rewards"] == {"format": 0.5, "accuracy": 0.5} and not no_think["think"]


def test_stvg_scores_from_a_samples_file_not_from_the_raw_annotations(tmp_path, capsys):
    # an stvg answer names the sampled frames the model saw: only build_samples' rows (bound to them) say which
    row = {"id": "v1", "task": "stvg", "video_id": "v1",
           "problem": {"sentence": "s", "duration": 8.0, "frame_times": [0.0, 2.0, 4.0, 6.0]},
           "solution": {"timestamps": [2.0, 6.0], "frame_times": [0.0, 2.0, 4.0, 6.0],
                        "boxes": [None, [0.1, 0.1, 0.5, 0.5], [0.2, 0.1, 0.6, 0.5], None]}}
    other = {**row, "id": "t1", "task": "tg", "solution": {"timestamps": [2.0, 6.0]}}
    samples = tmp_path / "eval.jsonl"
    samples.write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")
    # frames at 2 and 4 s are inside [2, 6): IoU 1 at 2 s, at 4 s [0.2, 0.1, 0.5, 0.5] vs gold 0.12/0.16 = 0.75
    preds = write_predictions(tmp_path / "p.jsonl", [
        {"id": "v1", "output": "<answer>2.00 to 6.00</answer> <boxes>[[0.10, 0.10, 0.50, 0.50], "
                               "[0.20, 0.10, 0.50, 0.50]]</boxes>"}])
    rc, report, _ = score(capsys, "--task", "stvg", "--annotations", samples, "--predictions", preds, "--no-think")
    assert rc == 0 and report["metrics"]["count"] == 1  # the tg row of the same file is not stvg's
    assert report["metrics"]["m_tIoU"] == 1.0 and report["metrics"]["m_vIoU"] == pytest.approx((1 + 0.75) / 2)


# ---------------------------------------------------------------- bad input and the pure core


@real
def test_unreadable_inputs_exit_2_naming_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    preds = write_predictions(tmp_path / "p.jsonl", [])
    rc, report, err = score(capsys, "--task", "tg", "--annotations", broken, "--predictions", preds)
    assert rc == 2 and not report and str(broken) in err and "malformed JSON" in err
    rc, _, err = score(capsys, "--task", "tg", "--annotations", CHARADES, "--predictions", tmp_path / "none.jsonl")
    assert rc == 2 and "none.jsonl" in err
    rc, _, err = score(capsys, "--task", "gqa", "--annotations", CHARADES, "--predictions", preds)  # wrong task
    assert rc == 2 and "no gqa sample could be read" in err and "must be a JSON list" in err
    with pytest.raises(SystemExit):  # argparse: unknown task
        cli.main(["score", "--task", "nope", "--annotations", str(CHARADES), "--predictions", str(preds)])


def test_read_predictions_problems_have_line_numbers():
    outputs, problems = read_predictions([
        b'{"id": "a", "output": "x"}\n',
        b"\xff\xfe{}\n",
        b'{"id": true, "output": "x"}\n',
        b'{"id": "", "output": "x"}\n',
        b'{"id": "b", "output": ["x"]}\n',
        b"\n",
        b'{"id": 7, "output": ""}\n',
    ])
    assert outputs == {"a": "x", "7": ""}
    assert [(p["line"], p["reason"].split(" ")[0]) for p in problems] == [
        (2, "not"), (3, "'id'"), (4, "'id'"), (5, "'output'")]


def test_score_predictions_counts_reconcile():
    samples = [{"id": "s1", "task": "qa", "solution": {"answer": "B"}},
               {"id": "s2", "task": "qa", "solution": {"answer": "H"}},  # this task cannot score an H
               {"id": "s3", "task": "qa", "solution": {"answer": "A"}}]
    report, records = score_predictions("qa", samples, {"s1": "<answer>B</answer>", "s2": "<answer>H</answer>"})
    assert len(records) == 3 and records[1]["error"].startswith("ValueError")
    assert report["unscorable"] == [{"id": "s2", "reason": records[1]["error"]}]
    assert report["metrics"]["count"] + len(report["unscorable"]) == len(samples)
    assert report["missing"] == {"count": 1, "ids": ["s3"]} and report["metrics"]["accuracy"] == 0.5


@real
def test_console_script(tmp_path):
    preds = write_predictions(tmp_path / "p.jsonl", TG_LINES[:1])
    exe = Path(sys.executable).with_name("videorft")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "videorft"]
    proc = subprocess.run([*cmd, "score", "--task", "tg", "--annotations", str(CHARADES), "--predictions",
                           str(preds)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"]["mIoU"] == pytest.approx(1 / 48)
