"""Frame budget arithmetic (table-driven + invariants) and the decoding backends."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from stages.datasets.synthetic import encode_mp4
from stages.params import ExtractFramesParams
from stages.video.budget import num_frames, plan_sequence, plan_video, resize_to_grid, uniform_indices
from stages.video.decode import DecodeError, probe_frames, probe_video, read_frames

PAPER = ExtractFramesParams()  # 2 fps, 4..768 frames, even, 28-pixel grid, 16/768/3584 x 28*28 pixels
TINY = ExtractFramesParams(max_frames=8, min_pixels=3136, max_pixels=112 * 84)


def test_paper_defaults_are_the_params_defaults():
    p = PAPER
    assert (p.fps, p.min_frames, p.max_frames, p.frame_factor, p.size_factor) == (2.0, 4, 768, 2, 28)
    assert (p.min_pixels, p.max_pixels, p.total_pixels) == (16 * 784, 768 * 784, 3584 * 784)


@pytest.mark.parametrize(
    "duration,total,params,expected",
    [
        (10.0, 250, PAPER, 20),  # 2 fps
        (9.75, 78, PAPER, 20),  # round(19.5) = 20 (half up)
        (9.25, 74, PAPER, 18),  # round(18.5) = 19 (half up), floored to even
        (1.0, 25, PAPER, 4),  # min_frames
        (1000.0, 25000, PAPER, 768),  # max_frames
        (0.12, 3, PAPER, 2),  # fewer frames than min_frames: keep what there is, even
        (60.0, 1500, TINY, 8),
        (30.0, 900, ExtractFramesParams(fps=1.0, min_frames=5, frame_factor=4), 28),
        (2.0, 50, ExtractFramesParams(fps=1.0, min_frames=5, frame_factor=4), 8),  # min 5 -> 8 (multiple of 4)
    ],
)
def test_num_frames_table(duration, total, params, expected):
    assert num_frames(duration, total, params) == expected


@pytest.mark.parametrize(
    "duration,total,params,match",
    [
        (0.0, 10, PAPER, "duration"),
        (5.0, 1, PAPER, "fewer than frame_factor"),
    ],
)
def test_num_frames_rejects(duration, total, params, match):
    with pytest.raises(ValueError, match=match):
        num_frames(duration, total, params)


@pytest.mark.parametrize(
    "h,w,lo,hi,expected",
    [
        (168, 224, 16 * 784, 768 * 784, (168, 224)),  # already on the grid
        (240, 320, 16 * 784, 768 * 784, (252, 308)),  # rounded to the grid (Qwen's choice)
        (1080, 1920, 16 * 784, 140492, (280, 476)),  # scaled down, floored
        (56, 56, 16 * 784, 768 * 784, (112, 112)),  # scaled up, ceiled
        (168, 224, 3136, 9408, (84, 112)),  # the demo budget
        (168, 224, 12544, 12544, (112, 112)),  # window of one size: aspect gives way to the bounds
    ],
)
def test_resize_table(h, w, lo, hi, expected):
    assert resize_to_grid(h, w, 28, lo, hi) == expected


def test_resize_none_when_grid_misses_window():
    assert resize_to_grid(100, 100, 28, 800, 1000) is None  # no multiple-of-28 square area in [800, 1000]


def test_plan_video_paper_defaults():
    plan = plan_video(10.0, 250, 25.0, 240, 320, PAPER)
    assert plan.num_frames == 20 and (plan.height, plan.width) == (252, 308)
    assert plan.indices == uniform_indices(250, 20) and plan.indices[0] == 0 and plan.indices[-1] == 249
    assert plan.timestamps == [round(i / 25.0, 6) for i in plan.indices]
    assert plan.sample_fps == pytest.approx(2.0)


def test_plan_video_pixel_budget_caps_frames():
    # 384 s of HD at 2 fps wants 768 frames, but 768 frames of >= min_pixels exceed total_pixels
    plan = plan_video(384.0, 9600, 25.0, 1080, 1920, PAPER)
    n, hw = plan.num_frames, plan.height * plan.width
    assert n % 2 == 0 and n < 768
    assert PAPER.min_pixels <= hw <= PAPER.max_pixels and n * hw <= PAPER.total_pixels


def test_plan_sequence_uses_box_convention():
    plan = plan_sequence(24, 10.0, 168, 224, TINY)
    assert plan.indices == [0, 3, 7, 10, 13, 16, 20, 23] == uniform_indices(24, 8)
    assert (plan.height, plan.width) == (84, 112)
    assert plan.timestamps[1] == 0.3
    assert plan_sequence(5, 10.0, 168, 224, TINY).indices == [0, 1, 1, 2, 2, 3, 3, 4]  # short folder: repeats


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(min_pixels=10_000, max_pixels=5_000), "min_pixels <= max_pixels"),
        (dict(max_pixels=500, min_pixels=100), "below one 28x28 patch"),
        (dict(min_frames=10, max_frames=4), "min_frames <= max_frames"),
        (dict(total_pixels=1000), "total_pixels"),
        (dict(tracking_frames=7), "tracking_frames"),
        (dict(fps=0), "fps"),
    ],
)
def test_impossible_params_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        plan_video(10.0, 250, 25.0, 240, 320, ExtractFramesParams(**params))


def test_extreme_aspect_rejected():
    with pytest.raises(ValueError, match="aspect ratio"):
        plan_video(10.0, 250, 25.0, 2, 1000, PAPER)


@settings(max_examples=300, deadline=None)
@given(
    duration=st.floats(0.05, 4000),
    src_fps=st.sampled_from([1.0, 8.0, 10.0, 24.0, 29.97, 60.0]),
    h=st.integers(8, 2160),
    w=st.integers(8, 3840),
    fps=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    max_frames=st.integers(2, 800),
    min_px=st.sampled_from([784, 3136, 16 * 784]),
    max_px=st.sampled_from([9408, 256 * 784, 768 * 784]),
    total_px=st.sampled_from([64 * 784, 3584 * 784, 24576 * 784]),
)
def test_plan_invariants(duration, src_fps, h, w, fps, max_frames, min_px, max_px, total_px):
    p = ExtractFramesParams(fps=fps, max_frames=max_frames, min_frames=min(4, max_frames), min_pixels=min_px,
                            max_pixels=max(max_px, min_px), total_pixels=total_px)
    total = max(1, round(duration * src_fps))
    try:
        plan = plan_video(total / src_fps, total, src_fps, h, w, p)
    except ValueError as e:
        assert str(e)  # impossible inputs fail with a reason
        return
    n = plan.num_frames
    assert n % p.frame_factor == 0 and 2 <= n <= min(p.max_frames, total)
    assert plan.height % 28 == 0 and plan.width % 28 == 0
    assert p.min_pixels <= plan.height * plan.width <= p.max_pixels
    assert n * plan.height * plan.width <= p.total_pixels
    assert plan.indices == sorted(plan.indices) and len(set(plan.indices)) == n and plan.indices[-1] < total


# ---------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 3 s, 8 fps H.264 clip whose frame i shows a bright bar at column 8*i (identifiable frames)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = []
    for i in range(24):
        img = np.full((96, 224, 3), 60, np.uint8)
        img[:, 8 * i : 8 * i + 8] = (250, 250, 250)
        frames.append(img)
    encode_mp4(path, frames, 8.0, 224, 96)
    return path


def test_probe_video(clip):
    info = probe_video(clip)
    assert (info.fps, info.frames, info.duration, info.width, info.height, info.codec) == (8.0, 24, 3.0, 224, 96, "h264")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_backend_reads_requested_frames(clip, backend):
    idx = [0, 5, 5, 23, 11]
    frames = read_frames(clip, idx, backend=backend)
    assert frames.shape == (5, 96, 224, 3) and frames.dtype == np.uint8
    bright_col = frames[:, 48].mean(axis=2).argmax(axis=1)  # column of the bar in each returned frame
    assert [c // 8 for c in bright_col] == idx


def test_decord_and_pyav_agree(clip):
    idx = uniform_indices(24, 8)
    a = read_frames(clip, idx, backend="decord").astype(int)
    b = read_frames(clip, idx, backend="pyav").astype(int)
    assert np.abs(a - b).max() <= 2  # same bitstream decode; colour conversion may differ by rounding


def test_decode_errors(clip, tmp_path):
    for backend in ("decord", "pyav"):
        with pytest.raises(DecodeError):
            read_frames(clip, [24], backend=backend)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(DecodeError):
        probe_video(fake)
    for backend in ("decord", "pyav"):
        with pytest.raises(DecodeError):
            read_frames(fake, [0], backend=backend)
    with pytest.raises(ValueError, match="backend"):
        read_frames(clip, [0], backend="torchcodec")


def test_frame_folder(tmp_path):
    for i in range(5):
        Image.fromarray(np.full((30, 40, 3), 40 * i, np.uint8)).save(tmp_path / f"{i + 1:08d}.jpg", quality=95)
    (tmp_path / "groundtruth.txt").write_text("ignored")
    info = probe_frames(tmp_path, 10.0)
    assert (info.frames, info.width, info.height, info.duration, info.codec) == (5, 40, 30, 0.5, "jpeg")
    frames = read_frames(tmp_path, [4, 0, 0])
    assert frames.shape == (3, 30, 40, 3)
    assert abs(int(frames[0].mean()) - 160) <= 2 and abs(int(frames[1].mean())) <= 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecodeError, match="no JPEG frames"):
        probe_frames(tmp_path / "empty", 10.0)


def test_probe_counts_frames_when_container_has_no_count(tmp_path):
    import av

    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:  # Matroska headers carry no frame count
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            out.mux(st.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")))
        out.mux(st.encode())
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0
    info = probe_video(path)
    assert (info.frames, info.fps, info.duration) == (30, 25.0, 1.2)


# ---------------------------------------------------------------- sparse decoding and resizing


def _encode(path, n, options, fmt=None, size=(96, 160), fps=25):
    """n identifiable frames (frame i: a bright bar at column 4*i on a fixed texture) with the given x264 options."""
    import av

    h, w = size
    texture = np.random.default_rng(0).integers(40, 90, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt, st.options = w, h, "yuv420p", options  # (x264's own options: x264-params)
        for i in range(n):
            img = texture.copy()
            img[:, (4 * i) % (w - 4):(4 * i) % (w - 4) + 4] = 250
            out.mux(st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(st.encode())
    return path


ENCODINGS = {  # b-adapt=0: B-frames wherever asked, whatever the content
    "b-pyramid": ({"x264-params": "bframes=3:b-adapt=0:b-pyramid=normal"}, "mp4"),
    "no-b-frames": ({"x264-params": "bframes=0"}, "mp4"),
    "open-gop-short-keyint": ({"x264-params": "bframes=3:b-adapt=0:keyint=12:open-gop=1"}, "mp4"),
    "matroska": ({"x264-params": "bframes=2:b-adapt=0:b-pyramid=none"}, "matroska"),
    "annex-b": ({"x264-params": "bframes=3:b-adapt=0"}, "h264"),  # raw H.264: no timestamps, frames counted
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_skipping_decoder_returns_exactly_the_frames_of_a_full_decode(tmp_path, name):
    """PyAV skips non-reference pictures it does not need; the frames it returns are bit-identical to decoding
    every frame (PyAV, and decord reading all frames in order) at the same indices, for sparse, dense, repeated
    and unordered requests. (decord's own sparse get_batch seeks, and on open-GOP streams returns later frames
    than asked: docs/data.md.)"""
    import decord

    from stages.video.decode import _read_pyav_counting

    options, fmt = ENCODINGS[name]
    path = _encode(tmp_path / f"v.{ {'matroska': 'mkv', 'h264': 'h264'}.get(fmt, 'mp4')}", 60, options, fmt)
    n = 60
    every = None if fmt == "h264" else decord.VideoReader(str(path), num_threads=1).get_batch(range(n)).asnumpy()
    for idx in (uniform_indices(n, 6), uniform_indices(n, 30), [59, 3, 3, 0, 17], list(range(n))):
        ours = read_frames(path, idx, backend="pyav")
        full = _read_pyav_counting(path, idx, None, 1)
        assert np.array_equal(ours, np.stack([full[i] for i in idx])), idx
        if every is not None:  # decord cannot index raw Annex B streams
            assert np.array_equal(ours, every[idx]), idx


def test_non_reference_pictures_are_really_skipped(tmp_path):
    import av

    from stages.video import h264

    path = _encode(tmp_path / "v.mp4", 48, *ENCODINGS["b-pyramid"])
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        size = h264.nal_length_size(st.codec_context.extradata)
        flags = [h264.droppable(bytes(p), size) for p in c.demux(st) if p.size]
    assert size == 4 and len(flags) == 48 and 0.25 < sum(flags) / 48 < 0.75  # x264 makes many B-frames droppable
    assert not flags[0]  # the IDR picture is a reference


@pytest.mark.parametrize("data,length_size,expected", [
    (b"\x00\x00\x00\x02\x01\x9a", 4, True),  # nal_ref_idc 0, type 1 (non-IDR slice)
    (b"\x00\x00\x00\x02\x41\x9a", 4, False),  # nal_ref_idc 2, type 1
    (b"\x00\x00\x00\x02\x65\x88", 4, False),  # IDR
    (b"\x00\x00\x00\x01\x06\x00\x00\x00\x02\x01\x9a", 4, True),  # SEI then a non-reference slice
    (b"\x00\x00\x00\x01\x06", 4, False),  # no slice at all
    (b"\x00\x00\x00\x09\x01", 4, False),  # length runs past the packet: not trusted
    (b"\x00\x00\x01\x01\x9a\x00\x00\x01\x01\x9b", None, True),  # Annex B, two non-reference slices
    (b"\x00\x00\x00\x01\x21\x9a", None, False),  # Annex B, reference slice after a 4-byte start code
])
def test_droppable_reads_only_nal_headers(data, length_size, expected):
    from stages.video.h264 import droppable

    assert droppable(data, length_size) is expected


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_resize_while_decoding_matches_a_separate_resize(clip, backend):
    """Frames resized by the decoder (swscale bicubic for PyAV) stay close to decode-then-PIL-bicubic."""
    from stages.video.decode import resize_rgb

    idx = [0, 7, 23]
    small = read_frames(clip, idx, backend=backend, size=(56, 112))
    ref = resize_rgb(read_frames(clip, idx, backend=backend), (56, 112))
    assert small.shape == ref.shape == (3, 56, 112, 3)
    assert np.abs(small.astype(int) - ref).mean() < 3
    assert [c // 4 for c in small[:, 28].mean(axis=2).argmax(axis=1)] == [i for i in idx]  # the bar moved with i


def test_frame_folder_resize_uses_jpeg_draft(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((480, 640, 3), 60 * i, np.uint8)).save(tmp_path / f"{i + 1:08d}.jpg", quality=95)
    frames = read_frames(tmp_path, [2, 0], size=(112, 140))
    assert frames.shape == (2, 112, 140, 3) and abs(int(frames[0].mean()) - 120) <= 2


def test_probe_rejects_truncated_and_codecless_files(clip, tmp_path):
    import av

    cut = tmp_path / "cut.mp4"
    with av.open(str(cut), "w", format="mp4", options={"movflags": "faststart"}) as out:
        st = out.add_stream("libx264", rate=8)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            out.mux(st.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8), format="rgb24")))
        out.mux(st.encode())
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(DecodeError, match=r"truncated: the header declares 40 frames, the file holds \d+"):
        probe_video(cut)
    exotic = tmp_path / "exotic.mp4"
    exotic.write_bytes(clip.read_bytes().replace(b"avc1", b"zzz1"))
    with pytest.raises(DecodeError, match="no decoder"):
        probe_video(exotic)
    with pytest.raises(DecodeError, match="no decoder"):
        read_frames(exotic, [0], backend="pyav")


def test_frame_cache_key_follows_the_plan_not_the_params():
    from stages.video.frame_cache import frame_key

    a = plan_video(10.0, 250, 25.0, 240, 320, TINY)
    b = plan_video(10.0, 250, 25.0, 240, 320, TINY.model_copy(update={"max_frames": 10, "total_pixels": 94080}))
    c = plan_video(10.0, 250, 25.0, 240, 320, TINY.model_copy(update={"fps": 2.01}))  # same frames: same key
    assert frame_key("s", a, "pyav") != frame_key("s", b, "pyav")
    assert frame_key("s", a, "pyav") == frame_key("s", c, "pyav") != frame_key("s", a, "decord")
    assert frame_key("s", a, "pyav") != frame_key("t", a, "pyav")
