"""HC-STVG (v1 and v2) annotations -> stvg samples, and their binding to the sampled frames of a video.

The official layout (read from the loaders of TubeDETR, antoyang/TubeDETR preproc/preproc_hcstvg.py and
preproc/preproc_hcstvgv2.py, and CG-STVG, HengLan/CGSTVG datasets/hcstvg.py): one JSON object keyed by the video
file name ("<id>.mp4", some ".mkv"), one query per video:
    img_num   frames in the video (the clips last 20 s: TubeDETR takes fps = img_num / 20)
    st_frame  first frame of the tube, 1-based ("starts with 1"; CG-STVG subtracts 1)
    bbox      one [x, y, w, h] box in pixels (top-left corner, width, height) per frame from st_frame on, so the
              tube is frames st_frame .. st_frame + len(bbox) - 1 (TubeDETR: end = st_frame + len(bbox), excluded)
    st_time, ed_time  the tube's start and end in seconds
    v1 (train.json, test.json): caption, width, height
    v2 (trainv2.json, valv2.json): English, img_size = [height, width, ...]
A sample is {"id", "task": "stvg", "video_id", "problem": {"sentence"}, "solution": {"timestamps", "track"}}
with the interval and the tube's normalised xyxy boxes (clipped to the frame) rounded to 2 decimals, the answer's
precision (so the gold answer written as the prompt asks scores 1), the tube in "track" {"start" (0-based frame),
"num_frames", "boxes", "policy"}.
HC-STVG gives no video duration, so the interval is checked against the measured one in `bind`, by `policy`.
"""
from __future__ import annotations

from stages.datasets.annotations import Ids, field, load_json, number, reject, text, video_id_of

TASK = "stvg"
FRAME_TOLERANCE = 2  # frames a sampled frame inside the interval may lie outside the tube (times are rounded)


def _count(value, field: str, least: int) -> int:
    x = number(value, field)
    if x != int(x) or x < least:
        raise ValueError(f"{field} {value!r} is not an integer >= {least}")
    return int(x)


def _size(entry) -> tuple[float, float]:
    """(width, height) in pixels: v1's width/height, else v2's img_size [height, width, ...]."""
    if "width" in entry or "height" in entry:
        width, height = number(field(entry, "width"), "width"), number(field(entry, "height"), "height")
    else:
        size = field(entry, "img_size")
        if not isinstance(size, list) or len(size) < 2:
            raise ValueError(f"img_size {size!r:.60} is not [height, width, ...]")
        height, width = number(size[0], "img_size height"), number(size[1], "img_size width")
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} is not positive")
    return width, height


def _box(b, k: int, width: float, height: float) -> list[float]:
    """Pixel [x, y, w, h] -> normalised [x0, y0, x1, y1] clipped to the frame."""
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        raise ValueError(f"bbox {k} {b!r:.60} is not [x, y, w, h]")
    x, y, w, h = (number(v, f"bbox {k} coordinate") for v in b)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {k} {b!r:.60} has width or height <= 0")
    xyxy = [x / width, y / height, (x + w) / width, (y + h) / height]
    box = [round(min(max(v, 0.0), 1.0), 2) for v in xyxy]  # the answer's precision
    if box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"bbox {k} {b!r:.60} is empty inside the {width:g}x{height:g} frame at two decimals")
    return box


def sample(key: str, entry, policy: str = "clip") -> dict:
    """One video entry -> a stvg sample (ValueError with the reason)."""
    if not isinstance(entry, dict):
        raise ValueError("video entry is not an object")
    sentence = text(entry["caption"] if "caption" in entry else field(entry, "English"), "caption/English")
    width, height = _size(entry)
    img_num = _count(field(entry, "img_num"), "img_num", 1)
    first = _count(field(entry, "st_frame"), "st_frame", 1)
    bbox = field(entry, "bbox")
    if not isinstance(bbox, list) or not bbox:
        raise ValueError("bbox is not a non-empty list of boxes")
    if first + len(bbox) - 1 > img_num:
        raise ValueError(f"tube frames {first}..{first + len(bbox) - 1} run past img_num {img_num}")
    start, end = number(field(entry, "st_time"), "st_time"), number(field(entry, "ed_time"), "ed_time")
    if start < 0:
        raise ValueError(f"st_time {start} is negative (before the video starts)")
    if round(start, 2) >= round(end, 2):
        raise ValueError(f"st_time {start} >= ed_time {end} (at two decimals)")
    boxes = [_box(b, k, width, height) for k, b in enumerate(bbox)]
    vid = video_id_of(key)
    return {
        "id": vid, "task": TASK, "video_id": vid, "problem": {"sentence": sentence},
        "solution": {"timestamps": [round(start, 2), round(end, 2)],
                     "track": {"start": first - 1, "num_frames": img_num, "boxes": boxes, "policy": policy}},
    }


def hcstvg(data, source: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """An HC-STVG v1/v2 file's parsed JSON -> (samples, rejected); each rejection names its video key."""
    if policy not in ("clip", "reject"):
        raise ValueError(f"unknown interval policy {policy!r}")
    if not isinstance(data, dict):
        return [], [reject(source, source, "HC-STVG file must be a JSON object keyed by video file name")]
    samples, rejected, ids = [], [], Ids()
    for k, (key, entry) in enumerate(getattr(data, "pairs", data.items())):
        try:
            ids.check(video_id_of(key), k)
            samples.append(sample(key, entry, policy))
        except ValueError as e:
            rejected.append(reject(video_id_of(key), source, f"{key}: {e}"))
    return samples, rejected


def load(path: str, policy: str = "clip") -> tuple[list[dict], list[dict]]:
    """Read an HC-STVG annotation file; malformed JSON or non-UTF-8 text raises ValueError naming the file."""
    return hcstvg(load_json(path), path, policy)


# ---------------------------------------------------------------- binding to the sampled frames


def _interval(solution: dict, duration: float) -> list[float]:
    start, end = solution["timestamps"]
    if start >= duration:
        raise ValueError(f"interval [{start}, {end}] starts after the video ends ({duration:g} s measured)")
    if end > duration:
        if solution["track"].get("policy") == "reject":
            raise ValueError(f"interval [{start}, {end}] outside [0, {duration:g}] (the measured duration)")
        end = round(duration, 2)
    return [start, end]


def _tube_box(track: dict, frame: int, t: float) -> list[float]:
    """The tube's box at a source frame (0-based); a frame just outside the tube takes the nearest box."""
    first, boxes = track["start"], track["boxes"]
    k = frame - first
    if not -FRAME_TOLERANCE <= k < len(boxes) + FRAME_TOLERANCE:
        raise ValueError(f"sampled frame {frame} at {t:.2f} s lies inside the interval but outside the tube (frames "
                         f"{first}..{first + len(boxes) - 1}, 0-based): st_time/ed_time disagree with st_frame/bbox")
    return boxes[min(max(k, 0), len(boxes) - 1)]


def bind(sample: dict, meta: dict) -> dict:
    """Put the sampled frames' times (2 decimals, as the prompt lists them) and the measured duration into the
    problem, and the gold box of each sampled frame inside the interval (None elsewhere) into the solution.
    ValueError when the video is not one, its frame count disagrees with img_num, or no sampled frame lies inside
    the interval."""
    if meta.get("kind", "video") != "video":
        raise ValueError(f"stvg needs a video, {sample['video_id']!r} is a {meta.get('kind')}")
    track, duration = sample["solution"]["track"], float(meta["duration"])
    counted = round(duration * float(meta["source_fps"]))
    if abs(counted - track["num_frames"]) > max(FRAME_TOLERANCE, 0.02 * track["num_frames"]):
        raise ValueError(f"video has about {counted} frames ({duration:g} s at {meta['source_fps']:g} fps), the "
                         f"annotation's img_num is {track['num_frames']}")
    interval = _interval(sample["solution"], duration)
    times = [round(float(t), 2) for t in meta["timestamps"]]
    boxes = [_tube_box(track, int(f), t) if interval[0] <= t < interval[1] else None
             for f, t in zip(meta["frame_indices"], times, strict=True)]
    if all(b is None for b in boxes):
        raise ValueError(f"no sampled frame inside the interval [{interval[0]}, {interval[1]}) (sampled at "
                         f"{', '.join(f'{t:.2f}' for t in times)} s)")
    return {**sample, "problem": {**sample["problem"], "duration": duration, "frame_times": times},
            "solution": {"timestamps": interval, "frame_times": times, "boxes": boxes}}
