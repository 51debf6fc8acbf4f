"""stages/video_swap: the same prompts with another video's frames; the pairing and the comparison worked by hand."""
from stages import tasks as task_registry
from stages.evaluate import report
from stages.video_swap import compare, plan, swapped_rows

TIMES = [0.0, 2.0, 4.0, 6.0]


def row(i: int, video: str, task: str = "tg", times=TIMES, fps: float = 0.5) -> dict:
    return {"id": f"{video}#{i}", "task": task, "frames": f"frames/{video}.npy", "video_id": video, "fps": fps,
            "num_frames": len(times), "frame_times": list(times), "prompt": f"p{i}"}


def test_every_row_gets_another_video_of_the_same_layout_and_keeps_its_prompt():
    rows = [row(0, "a"), row(1, "a"), row(2, "b"), row(3, "c"), row(4, "c"),
            row(5, "d", times=[0.0, 1.0, 2.0, 3.0]),                     # a layout no other video has: left out
            row(6, "e", task="qa"), row(7, "f", task="qa")]
    kept, swapped = swapped_rows(rows, seed=3)
    assert kept == [0, 1, 2, 3, 4, 6, 7]
    for i, s in zip(kept, swapped):
        assert s["frames"] != rows[i]["frames"] and s["prompt"] == rows[i]["prompt"] and s["id"] == rows[i]["id"]
        donor = next(r for r in rows if r["frames"] == s["frames"])
        assert (donor["task"], donor["frame_times"]) == (rows[i]["task"], rows[i]["frame_times"])
        assert s["frames_of"] == donor["video_id"]
    # both questions of video a see the same other video: videos are swapped whole
    assert swapped[0]["frames"] == swapped[1]["frames"]
    # a derangement of the videos a, b, c: each one's frames go to exactly one other video
    assert sorted({s["frames"] for s in swapped[:5]}) == ["frames/a.npy", "frames/b.npy", "frames/c.npy"]
    assert {swapped[5]["frames"], swapped[6]["frames"]} == {"frames/e.npy", "frames/f.npy"}
    assert swapped_rows(rows, seed=3) == (kept, swapped)  # seeded


def test_plan_swaps_the_first_rows_of_every_task_and_counts_the_left_out():
    rows = [row(0, "a"), row(1, "b"), row(2, "c"), row(3, "d", task="qa"), row(4, "e", task="qa"),
            row(5, "f", task="stvg")]                                    # the only stvg video: left out
    idx, swapped, left_out = plan(rows, 2, seed=1)
    assert idx == [0, 1, 3, 4] and left_out == 1                       # c is the third tg row: not chosen
    assert [s["id"] for s in swapped] == ["a#0", "b#1", "d#3", "e#4"]
    assert swapped[0]["frames"] == "frames/b.npy" and swapped[1]["frames"] == "frames/a.npy"


def scored(task: str, outputs: list[str], solutions: list[dict]) -> list[dict]:
    rows = [{"id": str(i), "task": task, "solution": s} for i, s in enumerate(solutions)]
    return task_registry.score_outputs(rows, outputs, True)[1]


def answer(a: float, b: float) -> str:
    return f"<think>x</think> <answer>{a:.2f} to {b:.2f}</answer>"


def test_answers_that_change_with_the_video_and_answers_that_do_not():
    gold = [{"timestamps": [0.0, 2.0]}, {"timestamps": [2.0, 4.0]}, {"timestamps": [4.0, 6.0]}]
    own = scored("tg", [answer(0, 2), answer(2, 4), answer(4, 6)], gold)          # IoU 1, 1, 1
    other = scored("tg", [answer(2, 4), answer(4, 6), answer(0, 2)], gold)        # IoU 0, 0, 0
    got = compare(own, other, level=0.95, resamples=500, seed=0)["tg"]
    assert (got["metric"], got["own"], got["other"], got["n"]) == ("mIoU", 1.0, 0.0, 3)
    assert (got["delta"], got["lo"], got["hi"]) == (1.0, 1.0, 1.0)
    assert got["verdict"] == "answers use the video"
    # by hand: the same answer with either video scores the same: own - other is 0 on every sample
    same = compare(own, own, level=0.95, resamples=500, seed=0)["tg"]
    assert (same["delta"], same["lo"], same["hi"], same["verdict"]) == (0.0, 0.0, 0.0,
                                                                          "NO sign the answers use the video")
    worse = compare(other, own, level=0.95, resamples=500, seed=0)["tg"]
    assert worse["verdict"] == "scores BETTER with another video"


def test_the_report_says_when_a_learned_gain_does_not_use_the_video():
    sw = {"metric": "AO", "own": 0.16, "other": 0.155, "delta": 0.005, "lo": -0.001, "hi": 0.01, "n": 64,
          "verdict": "NO sign the answers use the video"}
    result = {"candidate": {"metrics": {"tracking": {"AO": 0.16}}}, "baseline": {"metrics": {"tracking": {"AO": 0.12}}},
              "intervals": {"tracking": {"AO": {"delta": 0.04, "lo": 0.01, "hi": 0.07}}}, "interval": {"level": 0.95},
              "video_swap": {"candidate": {"tracking": sw}}}
    lines = report(result)
    assert lines[1] == ("  tracking AO: learned; the answers do not use the video (another video's frames score the "
                        "same) (+0.040 [+0.010, +0.070])")
    assert ("  tracking AO with another video's frames (same prompts, 64 samples), candidate: 0.160 own -> 0.155 "
            "other, own - other +0.005 [-0.001, +0.010]: NO sign the answers use the video") in lines
    assert lines[-1] == "Learned beyond noise (95% interval): tracking AO (answers do not use the video)"
