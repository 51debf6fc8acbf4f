"""The frame-cache reader (stages/video/frames.py) and where the model inputs take frame times from
(stages/model/video_inputs.py sample_frames): the row's frame_times, else the meta beside the frames."""
import json

import numpy as np
import pytest

from stages.model.video_inputs import sample_frames
from stages.video.frames import FramesError, read_cached

TIMES = [0.0, 1.25, 2.5, 3.75]


def clip(tmp_path, n=4, meta=True, **extra):
    path = tmp_path / "clip.npy"
    np.save(path, np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3))
    if meta:
        path.with_suffix(".json").write_text(json.dumps({"num_frames": n, "timestamps": TIMES[:n], **extra}))
    return path


def test_frames_with_their_times_and_meta(tmp_path):
    path = clip(tmp_path, fps=0.8)
    frames = read_cached(path)
    assert frames.array.shape == (4, 2, 2, 3) and isinstance(frames.array, np.memmap)
    assert frames.times == TIMES and frames.meta["fps"] == 0.8
    full = read_cached(path, mmap=False)
    assert not isinstance(full.array, np.memmap) and np.array_equal(full.array, frames.array)
    assert read_cached(path, meta=False)[1:] == (None, None)  # the meta is not read at all


def test_frames_without_meta_have_no_times(tmp_path):
    frames = read_cached(clip(tmp_path, meta=False))
    assert frames.times is None and frames.meta is None


def test_a_rewritten_file_is_read_again(tmp_path):
    path = clip(tmp_path, meta=False)
    assert read_cached(path).array[0, 0, 0, 0] == 0
    np.save(path, np.full((4, 2, 2, 3), 7, np.uint8))
    assert read_cached(path).array[0, 0, 0, 0] == 7


@pytest.mark.parametrize("meta, why", [
    ({"num_frames": 5}, r"4 frames cached, meta says 5"),
    ({"timestamps": [0.0, 1.0]}, r"4 frames cached, meta has 2 timestamps"),
])
def test_meta_that_does_not_match_its_frames(tmp_path, meta, why):
    path = clip(tmp_path, meta=False)
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FramesError, match=rf"^v1: frames file {path} unusable \({why}\); run extract_frames again"):
        read_cached(path, "v1")


def test_unusable_files_name_file_and_item(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((4, 2, 2), np.float32))
    with pytest.raises(FramesError, match=r"^sample 'x': frames file .*bad.npy unusable \(holds float32 \(4, 2, 2\)"):
        read_cached(path, "sample 'x'")
    path = clip(tmp_path)
    path.with_suffix(".json").write_text("{")
    with pytest.raises(FramesError, match=r"unusable \(meta clip.json: JSONDecodeError") as e:
        read_cached(path)
    assert e.value.reason.startswith("meta clip.json: JSONDecodeError")


def test_sample_times_come_from_the_row(tmp_path):
    path = clip(tmp_path)
    row = {"id": "tg-1", "frames": str(path), "fps": 0.8}
    assert sample_frames(row).times == TIMES  # a row without frame_times (an older samples file): the meta's
    path.with_suffix(".json").write_text("not read")  # with frame_times the meta is not read
    row["frame_times"] = [0.5, 1.5, 2.5, 3.5]
    frames = sample_frames(row)
    assert frames.times == [0.5, 1.5, 2.5, 3.5] and frames.array.shape[0] == 4
    with pytest.raises(FramesError, match=r"^sample 'tg-1': frames file .*nowhere.npy unusable \(FileNotFoundError"):
        sample_frames({**row, "frames": str(tmp_path / "nowhere.npy")})
