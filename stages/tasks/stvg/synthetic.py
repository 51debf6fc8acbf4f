"""Synthetic spatio-temporal grounding videos with an HC-STVG (v1 layout) annotation file.

Each video is a scene of stages.datasets.synthetic (objects in their own lanes, distinct colours, each visible on
frames a .. b-1 and moving linearly), drawn and encoded by the same functions; one object is the target, and the
description names it and its motion ("the red circle moves left"). Its tube: st_frame = a + 1 (1-based), one pixel
[x, y, w, h] box per frame a .. b-1 (the size x size square every shape is drawn in), st_time = a / fps,
ed_time = b / fps (the shared time convention: exact at two decimals on the time grid).

Writes root/videos/stvg<NNNNN>.mp4 (beside the shared videos, so ingest takes them from the same folder) and
root/annotations/hcstvg.json; nothing at all for num_videos 0 (the default), so the demo's data stay
byte-identical. Options: p.tasks["stvg"] (OPTIONS lists them with their defaults; frame size and rate default to
the shared synthesize width, height and fps). Video i draws from the seed
sequence [p.seed, SEED_STREAM, i]: the shared videos use stream 0 and tracking sequences 1, so no stvg video
repeats another task's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.datasets.synthetic import encode_mp4, make_scene, render_video, time_grid
from stages.io import write_json

SEED_STREAM = 2
OPTIONS = {
    "num_videos": 0,                 # stvg videos (0: none, the demo's data stay as they are)
    "duration": 8.0,                 # seconds per video
    "event_fraction": (0.3, 0.6),    # shortest and longest time an object is visible, fractions of the video
    "objects_per_video": (1, 3),     # the target and up to two others (at most 4: lanes)
}


def options(p) -> dict:
    """The stvg options: p.tasks["stvg"] over OPTIONS and the shared width, height and fps; unknown keys raise."""
    given = dict(p.tasks.get("stvg", {}))
    defaults = {**OPTIONS, "width": p.width, "height": p.height, "fps": p.fps}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"synthesize.tasks.stvg: unknown options {unknown}; known: {sorted(defaults)}")
    o = {**defaults, **given}
    if o["num_videos"] < 0 or o["duration"] <= 0 or o["fps"] <= 0:
        raise ValueError("synthesize.tasks.stvg: need num_videos >= 0, duration > 0 and fps > 0")
    if not 1 <= o["objects_per_video"][0] <= o["objects_per_video"][1] <= 4:
        raise ValueError(f"synthesize.tasks.stvg: objects_per_video must be 1 <= min <= max <= 4, got "
                         f"{o['objects_per_video']}")
    if not 0 < o["event_fraction"][0] <= o["event_fraction"][1] <= 1:
        raise ValueError(f"synthesize.tasks.stvg: event_fraction must be 0 < min <= max <= 1, got "
                         f"{o['event_fraction']}")
    return o


def description(obj) -> str:
    verb = "stays still" if obj.direction == "none" else f"moves {obj.direction}"
    return f"the {obj.name} {verb}"


def entry(obj, n_frames: int, fps: float, width: int, height: int) -> dict:
    """The target's HC-STVG v1 entry."""
    boxes = []
    for i in range(obj.a, obj.b):
        cx, cy = obj.centre(i)
        r = obj.size / 2
        boxes.append([round(cx - r, 2), round(cy - r, 2), round(obj.size, 2), round(obj.size, 2)])
    return {"img_num": n_frames, "width": width, "height": height, "st_frame": obj.a + 1,
            "st_time": round(obj.a / fps, 2), "ed_time": round(obj.b / fps, 2), "caption": description(obj),
            "bbox": boxes}


def synthesize(p, root) -> dict:
    """Write this task's videos and root/annotations/hcstvg.json; return counts for the stage summary."""
    o = options(p)
    root = Path(root)
    if not o["num_videos"]:
        return {"stvg_videos": 0, "stvg_queries": 0}
    fps, width, height = float(o["fps"]), int(o["width"]), int(o["height"])
    g = time_grid(fps)
    n_frames = max(2 * g, round(o["duration"] * fps / g) * g)
    annotations = {}
    for i in range(int(o["num_videos"])):
        vid = f"stvg{i + 1:05d}"
        rng = np.random.default_rng([p.seed, SEED_STREAM, i])
        objs = make_scene(rng, n_frames, width, height, g, fps, tuple(o["event_fraction"]),
                          tuple(o["objects_per_video"]))
        encode_mp4(root / "videos" / f"{vid}.mp4", render_video(objs, n_frames, width, height), fps, width, height)
        target = objs[int(rng.integers(len(objs)))]
        annotations[f"{vid}.mp4"] = entry(target, n_frames, fps, width, height)
    write_json(root / "annotations" / "hcstvg.json", annotations)
    return {"stvg_videos": len(annotations), "stvg_queries": len(annotations)}
