"""stages.video.timing and the time-based frame plan on hand-made packet lists (the real files are in
tests/data/test_real_videos.py)."""
from __future__ import annotations

from fractions import Fraction

import pytest

from stages.params import ExtractFramesParams
from stages.video.budget import indices_by_time, plan_video
from stages.video.extract import key_revision
from stages.video.frame_cache import frame_key
from stages.video.timing import Packets, stream_times


def packets(pts, durations=None):
    return Packets(list(pts), durations or {}, 0, None)


def test_constant_rate_keeps_the_fps_arithmetic_despite_rounded_timestamps():
    # 29.97 fps in Matroska (ms timestamps, in packet order with B-frames), starting at 1.5 s
    ms = [1500 + round(k * 1001 / 30) for k in range(10)]
    t = stream_times(packets([ms[0], ms[2], ms[1], *ms[3:]]), Fraction(1, 1000), 30000 / 1001)
    assert t.cfr and t.start == 1.5 and t.duration == round(10 / (30000 / 1001), 6)
    assert t.times == [k / (30000 / 1001) for k in range(10)]


def test_variable_rate_times_are_the_pts_and_duration_ends_after_the_last_frame():
    pts = [0, 40, 80, 200, 320, 440]  # 25 fps, then 8.3 fps
    t = stream_times(packets(pts), Fraction(1, 1000), 25.0)
    assert not t.cfr and t.times == [0.0, 0.04, 0.08, 0.2, 0.32, 0.44]
    assert t.duration == 0.56 and t.fps == pytest.approx(6 / 0.56)  # last frame as long as the one before it
    assert stream_times(packets(pts, {440: 50}), Fraction(1, 1000), 25.0).duration == 0.49  # its own duration


def test_missing_or_repeated_pts_fall_back_to_counting():
    for pts in ([0, None, 80], [0, 40, 40]):
        t = stream_times(packets(pts), Fraction(1, 1000), 25.0)
        assert t.cfr and t.frames == 3 and t.duration == 0.12


def test_plan_by_time_picks_frames_uniform_in_time():
    times = [0.0, 0.04, 0.08, 0.2, 0.32, 0.44, 0.56, 0.68]
    assert indices_by_time(times, 4) == [0, 3, 5, 7]  # targets 0, 0.227, 0.453, 0.68
    p = ExtractFramesParams(fps=5.0, min_frames=2, max_frames=4)
    plan = plan_video(0.8, 8, 10.0, 120, 160, p, times)
    assert plan.indices == [0, 3, 5, 7] and plan.timestamps == [0.0, 0.2, 0.44, 0.68]
    assert plan_video(0.8, 8, 10.0, 120, 160, p).indices == [0, 2, 5, 7]  # constant rate: by index as before


def test_cache_keys_change_only_where_decoding_changed():
    p = ExtractFramesParams()
    plan = plan_video(4.0, 100, 25.0, 120, 160, p)
    row = {"kind": "video", "codec": "h264", "path": "a.mp4", "rotation": 0}
    assert key_revision(row, p) == 1 and frame_key("s", plan, "pyav", 1) == frame_key("s", plan, "pyav")
    for changed in ({"rotation": 90}, {"codec": "mpeg4"}, {"path": "a.avi"}):
        assert key_revision({**row, **changed}, p) == 2
    assert key_revision(row, p.model_copy(update={"backend": "decord"})) == 2
    assert frame_key("s", plan, "pyav", 2) != frame_key("s", plan, "pyav")


def test_decoder_giving_more_frames_than_packets_is_an_error(tmp_path):
    """Frame-by-frame decoding counts frames in output order against the probed count: a stream whose decoder gives
    more frames than its packets hold would shift every frame after the extra one, so it is refused."""
    import av
    import numpy as np

    from stages.video.decode import DecodeError, read_frames

    path = tmp_path / "m.avi"
    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = 32, 32, "yuv420p"
        for i in range(6):
            out.mux(st.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * i, np.uint8), format="rgb24")))
        out.mux(st.encode())
    assert read_frames(path, [0, 5], total=6).shape == (2, 32, 32, 3)
    with pytest.raises(DecodeError, match="more frames than the 5 the file's packets hold"):
        read_frames(path, [0, 4], total=5)
