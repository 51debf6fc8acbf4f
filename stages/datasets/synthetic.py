"""Synthetic spatio-temporal benchmark: coloured shapes that appear, move and disappear on a plain background.

Ground truth is exact by construction, because the annotations are computed from the same scene description that
is rendered. Everything is a deterministic function of the seed (video i and sequence j draw from their own
sub-seeds, so adding videos does not change earlier ones).

Time convention (shared with stages.video.decode): frame i is shown at t = i / fps; a video of N frames lasts
N / fps seconds; an object visible on frames a .. b-1 has the interval [a / fps, b / fps]. Event frames are
snapped to a grid of g frames, the smallest g for which g / fps has at most two decimals (fps 8 -> g = 2, i.e.
0.25 s), so intervals written with two decimals are exact. (If no g <= 100 exists, g = 1 and times are rounded.)

Videos: each object keeps its own lane (horizontal bands when objects move left/right, vertical bands when they
move up/down), so no object ever hides another. Colours are unique within a video, so "the red circle" names
one object.

Tracking (GOT-10k layout): got10k/<seq>/00000001.jpg ... with groundtruth.txt (one `x,y,w,h` pixel line per
frame) and meta_info.ini (object_class). In annotations/got10k.json each sequence has `gt`: num_boxes normalised
[x0, y0, x1, y1] boxes (3 decimals) at frame indices round(linspace(0, N-1, num_boxes))
(stages.video.budget.uniform_indices); the frame extractor samples exactly these frames. The target is drawn last,
so a distractor never covers it.
"""
from __future__ import annotations

import concurrent.futures as cf
import fractions
import math
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stages.io import atomic_path, write_json, write_text
from stages.params import SynthesizeParams
from stages.video.budget import uniform_indices

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND = (112, 112, 112)
SHAPES = ("square", "circle", "triangle")
FAKE_SHAPES = ("star", "hexagon")  # never drawn; distractor options only
STILL = "it does not move"
QUESTIONS_PER_VIDEO = 2  # of each kind (grounded QA, multiple choice), drawn from the candidates below
LETTERS = "ABCDEFG"


@dataclass(frozen=True)
class Obj:
    """One object of a video: visible on frames a .. b-1, its centre moving linearly from p0 to p1."""

    colour: str
    shape: str
    size: float
    a: int
    b: int
    p0: tuple[float, float]
    p1: tuple[float, float]
    direction: str  # left | right | up | down | none

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def centre(self, i: int) -> tuple[float, float]:
        u = (i - self.a) / max(self.b - 1 - self.a, 1)
        return self.p0[0] + (self.p1[0] - self.p0[0]) * u, self.p0[1] + (self.p1[1] - self.p0[1]) * u


def time_grid(fps: float) -> int:
    """Smallest frame step whose duration has at most two decimals (see module docstring)."""
    rate = fractions.Fraction(fps).limit_denominator(1001)
    for g in range(1, 101):
        if (g * 100 / rate).denominator == 1:
            return g
    return 1


def draw(canvas: np.ndarray, shape: str, colour: str, cx: float, cy: float, size: float) -> None:
    """Paint a shape whose bounding box is the size x size square centred at (cx, cy); pixel centres decide."""
    h, w = canvas.shape[:2]
    r = size / 2
    y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
    x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    ys = np.arange(y0, y1)[:, None] + 0.5
    xs = np.arange(x0, x1)[None, :] + 0.5
    if shape == "square":
        mask = (abs(xs - cx) <= r) & (abs(ys - cy) <= r)
    elif shape == "circle":
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    elif shape == "triangle":  # apex up; half-width grows from 0 at the top to r at the base
        mask = (ys <= cy + r) & (abs(xs - cx) <= (ys - (cy - r)) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    canvas[y0:y1, x0:x1][mask] = COLOURS[colour]


# ---------------------------------------------------------------- scenes


def make_scene(rng: np.random.Generator, n_frames: int, width: int, height: int, g: int, fps: float,
               event_fraction: tuple[float, float] = (0.3, 1.0), objects: tuple[int, int] = (2, 4)) -> list[Obj]:
    """objects (min, max; default 2-4) in separate lanes with distinct colours and distinct appearance times, each visible
    for event_fraction (min, max) of the video."""
    axis = rng.choice(["h", "v"])  # h: objects move left/right in horizontal bands
    along, across = (width, height) if axis == "h" else (height, width)
    lane = across / 4
    gap = max(g, round(0.5 * fps / g) * g)  # at least ~0.5 s between appearances
    starts = list(range(0, max(int(0.6 * n_frames), 1), gap))
    n = int(min(rng.integers(objects[0], objects[1] + 1), len(starts)))
    appear = sorted(int(x) for x in rng.choice(starts, n, replace=False))
    lanes = rng.choice(4, n, replace=False)
    colours = rng.choice(list(COLOURS), n, replace=False)
    min_len = max(g, round(event_fraction[0] * n_frames / g) * g)
    max_len = n_frames if event_fraction[1] >= 1 else max(min_len, round(event_fraction[1] * n_frames / g) * g)
    objs = []
    for k in range(n):
        a = appear[k]
        ends = list(range(a + min_len, min(a + max_len, n_frames) + 1, g)) or [n_frames]
        stays = rng.random() < 0.3  # some stay until the end (when that is not longer than max_len)
        b = n_frames if stays and n_frames - a <= max_len else int(rng.choice(ends))
        size = float(rng.uniform(0.5, 0.75) * min(lane, 48))
        lo, hi = size / 2 + 2, along - size / 2 - 2
        moving = rng.random() < 0.75
        dist = float(rng.uniform(0.35, 0.8) * (hi - lo)) if moving else 0.0
        forward = bool(rng.random() < 0.5)  # right / down
        s0 = float(rng.uniform(lo, hi - dist)) if forward else float(rng.uniform(lo + dist, hi))
        s1 = s0 + dist if forward else s0 - dist
        c = (lanes[k] + 0.5) * lane
        p0, p1 = ((s0, c), (s1, c)) if axis == "h" else ((c, s0), (c, s1))
        direction = "none" if not moving else {("h", True): "right", ("h", False): "left",
                                                 ("v", True): "down", ("v", False): "up"}[(axis, forward)]
        objs.append(Obj(str(colours[k]), str(rng.choice(SHAPES)), size, a, b, p0, p1, direction))
    return objs


def render_video(objs: list[Obj], n_frames: int, width: int, height: int):
    for i in range(n_frames):
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = BACKGROUND
        for o in objs:
            if o.a <= i < o.b:
                draw(canvas, o.shape, o.colour, *o.centre(i), o.size)
        yield canvas


def encode_mp4(path: Path, frames, fps: float, width: int, height: int) -> None:
    """H.264 (libx264, yuv420p) mp4, written to a temp file and renamed."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            st = out.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
            st.width, st.height, st.pix_fmt = width, height, "yuv420p"
            # Same frames, same bytes (dvc.lock is compared across runs and machines), which x264 does not give by
            # default: its thread pool is sized from the CPUs the process may use, and the bitstream and options
            # SEI follow; and its SIMD code, on these flat backgrounds, now and then codes one block differently
            # from one run to the next in the same process (1 byte in 1 of ~15 encodes of a 42-frame clip, decoded
            # pixels identical; tests/unit/test_synthetic.py). One thread and the plain C code (asm=0) give
            # identical bytes every time.
            st.options = {"crf": "18", "preset": "veryfast", "x264-params": "asm=0"}
            st.codec_context.thread_count = 1
            for img in frames:
                out.mux(st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(st.encode())


# ---------------------------------------------------------------- questions


def lettered(rng: np.random.Generator, answer: str, distractors: list[str], n: int,
             must: list[str] = ()) -> tuple[list[str], str]:
    """n options in random order: the answer, the `must` distractors, the rest drawn from `distractors`.

    Returns (["(A) ...", ...], "(X)").
    """
    must = [d for d in dict.fromkeys(must) if d != answer][: n - 1]
    pool = [d for d in dict.fromkeys(distractors) if d != answer and d not in must]
    if len(must) + len(pool) < n - 1:
        raise ValueError(f"not enough distractors for {answer!r}")
    opts = must + [pool[int(i)] for i in rng.choice(len(pool), n - 1 - len(must), replace=False)]
    opts = [opts[int(i)] for i in rng.permutation(len(opts))]
    pos = int(rng.integers(0, n))
    opts.insert(pos, answer)
    return [f"({LETTERS[i]}) {o}" for i, o in enumerate(opts)], f"({LETTERS[pos]})"


def movement(o: Obj) -> str:
    return STILL if o.direction == "none" else o.direction


def names_of(objs: list[Obj], exclude: set[str]) -> list[str]:
    return [o.name for o in objs if o.name not in exclude]


def absent_names(objs: list[Obj]) -> list[str]:
    present = {o.name for o in objs}
    return [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]


def gqa_questions(rng, objs: list[Obj], fps: float, g: int) -> list[dict]:
    """Grounded QA candidates: question, 5 options, answer, evidence intervals (frames), type."""
    out = []
    o = objs[int(rng.integers(len(objs)))]
    ev = [[o.a, o.b]]
    opts, ans = lettered(rng, movement(o), ["left", "right", "up", "down", STILL], 5)
    out.append(dict(question=f"which direction does the {o.name} move", options=opts, answer=ans, glue=ev, type="CH"))
    opts, ans = lettered(rng, o.shape, list(SHAPES + FAKE_SHAPES), 5)
    out.append(dict(question=f"what shape is the {o.colour} object", options=opts, answer=ans, glue=ev, type="DO"))
    if sum(1 for x in objs if (x.shape, x.direction) == (o.shape, o.direction)) == 1:
        what = "does not move" if o.direction == "none" else f"moves {o.direction}"
        opts, ans = lettered(rng, o.colour, list(COLOURS), 5)
        out.append(dict(question=f"what colour is the {o.shape} that {what}", options=opts, answer=ans, glue=ev,
                        type="DC"))
    k = int(rng.integers(len(objs) - 1)) if len(objs) > 1 else None
    if k is not None:  # objects are sorted by appearance time, all distinct
        ref, nxt = objs[k], objs[k + 1]
        # the video's other objects are always among the options, so "the one that is in the video" is no shortcut
        opts, ans = lettered(rng, nxt.name, absent_names(objs), 5, must=names_of(objs, {ref.name, nxt.name}))
        end = min(nxt.b, nxt.a + max(g, round(fps / g) * g))  # until just after the answer appears
        out.append(dict(question=f"what appears right after the {ref.name} appears", options=opts, answer=ans,
                        glue=[[ref.a, end]], type="TN"))
    return out


def mcq_questions(rng, objs: list[Obj]) -> list[dict]:
    """Whole-video multiple choice (4 options)."""
    out = []
    n = len(objs)
    first = int(rng.integers(max(1, n - 3), n + 1))
    nums = [f"({LETTERS[i]}) {first + i}" for i in range(4)]
    out.append(dict(question="how many objects appear in the video", options=nums,
                    answer=f"({LETTERS[n - first]})"))
    present = [o.colour for o in objs]
    if n >= 3:
        absent = [c for c in COLOURS if c not in present]
        opts, ans = lettered(rng, str(rng.choice(absent)), present, 4)
        out.append(dict(question="which colour never appears in the video", options=opts, answer=ans))
    opts, ans = lettered(rng, objs[0].name, absent_names(objs), 4, must=names_of(objs, {objs[0].name}))
    out.append(dict(question="which object appears first in the video", options=opts, answer=ans))
    o = objs[int(rng.integers(n))]
    opts, ans = lettered(rng, movement(o), ["left", "right", "up", "down", STILL], 4)
    out.append(dict(question=f"in which direction does the {o.name} move", options=opts, answer=ans))
    return out


def tg_sentence(rng, o: Obj) -> str:
    if rng.random() < 0.4:
        return f"the {o.name} is visible"
    verb = "stays still" if o.direction == "none" else f"moves {o.direction}"
    return f"a {o.name} appears and {verb}" if o.a > 0 else f"the {o.name} {verb}"


# ---------------------------------------------------------------- tracking


def make_track(rng, n: int, width: int, height: int, motion: float = 1.0):
    """Target (colour, shape) with per-frame centre and size, plus one distractor drawn behind it. `motion` scales
    the path and the wobble; the random draws are the same for every value (1.0 gives the unscaled bytes)."""
    colour, other = (str(c) for c in rng.choice(list(COLOURS), 2, replace=False))
    shape, dshape = str(rng.choice(SHAPES)), str(rng.choice(SHAPES))
    short = min(width, height)
    s0, s1 = (float(x) for x in rng.uniform(0.15, 0.35, 2) * short)
    u = np.linspace(0, 1, n)
    size = s0 + (s1 - s0) * u
    half = max(s0, s1) / 2 + 1
    p0 = rng.uniform([half, half], [width - half, height - half])
    p1 = rng.uniform([half, half], [width - half, height - half])
    wobble = rng.uniform(0, 0.08 * short) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * u + rng.uniform(0, 6.3))
    wobble = wobble * motion
    cx = np.clip(p0[0] + (p1[0] - p0[0]) * motion * u + wobble, half, width - half)
    cy = np.clip(p0[1] + (p1[1] - p0[1]) * motion * u - wobble, half, height - half)
    dpos = rng.uniform([half, half], [width - half, height - half])
    dsize = float(rng.uniform(0.12, 0.25) * short)
    return colour, shape, cx, cy, size, (other, dshape, float(dpos[0]), float(dpos[1]), dsize)


def write_track(folder: Path, rng, p: SynthesizeParams) -> dict:
    n, w, h = p.tracking_length, p.width, p.height
    colour, shape, cx, cy, size, distractor = make_track(rng, n, w, h, p.tracking_motion)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = BACKGROUND
        dc, ds, dx, dy, dsz = distractor
        if p.tracking_distractor:
            draw(canvas, ds, dc, dx, dy, dsz)
        draw(canvas, shape, colour, cx[i], cy[i], size[i])
        with atomic_path(folder / f"{i + 1:08d}.jpg") as tmp:
            Image.fromarray(canvas).save(tmp, format="JPEG", quality=95)
        lines.append(f"{cx[i] - size[i] / 2:.4f},{cy[i] - size[i] / 2:.4f},{size[i]:.4f},{size[i]:.4f}")
    write_text(folder / "groundtruth.txt", "\n".join(lines) + "\n")
    # the native layout's metadata (GOT-10k writes one per sequence; the adapter takes object_class from it)
    write_text(folder / "meta_info.ini", f"[METAINFO]\nobject_class: {colour} {shape}\nmotion_class: moving\n"
                                         f"anno_fps: 10Hz\nresolution: ({w}, {h})\n")

    def box(i: int) -> list[float]:
        r = size[i] / 2
        xyxy = [(cx[i] - r) / w, (cy[i] - r) / h, (cx[i] + r) / w, (cy[i] + r) / h]
        return [round(min(max(float(v), 0.0), 1.0), 3) for v in xyxy]

    return {"object": f"{colour} {shape}", "gt": [box(i) for i in uniform_indices(n, p.num_boxes)]}


# ---------------------------------------------------------------- driver


def check(p: SynthesizeParams) -> None:
    if p.width % 2 or p.height % 2 or min(p.width, p.height) < 64:
        raise ValueError(f"width and height must be even and >= 64 (yuv420p, four lanes), got {p.width}x{p.height}")
    if not (0 < p.min_duration <= p.max_duration) or p.fps <= 0:
        raise ValueError("need fps > 0 and 0 < min_duration <= max_duration")
    if not (1 <= p.objects_per_video[0] <= p.objects_per_video[1] <= 4):
        raise ValueError(f"objects_per_video must be 1 <= min <= max <= 4 (four lanes), got {p.objects_per_video}")
    if not (0 < p.event_fraction[0] <= p.event_fraction[1] <= 1):
        raise ValueError(f"event_fraction must be 0 < min <= max <= 1, got {p.event_fraction}")
    if min(p.num_videos, p.num_tracking_sequences) < 0 or p.tracking_length < 1 or p.num_boxes < 1:
        raise ValueError("counts must be >= 0, tracking_length and num_boxes >= 1")


def video_id(i: int) -> str:
    return f"syn{i + 1:05d}"


def pick(rng, items: list, k: int) -> list:
    """k items (all if fewer) in their original order."""
    return [items[int(j)] for j in sorted(rng.choice(len(items), min(k, len(items)), replace=False))]


def annotate(vid: str, objs: list[Obj], n_frames: int, rng, fps: float, g: int) -> tuple[dict, list, list]:
    """The video's Charades-STA entry, NExT-GQA rows and MCQ rows (frames turned into seconds here)."""
    sec = lambda f: round(f / fps, 2)  # noqa: E731  exact: event frames lie on the time grid
    dur = sec(n_frames)
    tg = {"duration": dur, "timestamps": [[sec(o.a), sec(o.b)] for o in objs],
          "sentences": [tg_sentence(rng, o) for o in objs]}
    gqa = [{"id": f"{vid}_{k}", "video": f"{vid}.mp4", "question": q["question"], "options": q["options"],
            "duration": dur, "glue": [[sec(s), sec(e)] for s, e in q["glue"]], "type": q["type"], "answer": q["answer"]}
           for k, q in enumerate(pick(rng, gqa_questions(rng, objs, fps, g), QUESTIONS_PER_VIDEO))]
    mcq = [{"id": f"{vid}_mc{k}", "video": f"{vid}.mp4", **q}
           for k, q in enumerate(pick(rng, mcq_questions(rng, objs), QUESTIONS_PER_VIDEO))]
    return tg, gqa, mcq


def one_video(p: SynthesizeParams, i: int) -> tuple[str, dict, list, list]:
    """Video i (its own rng stream, so videos can be made in any order or process) and its annotations."""
    vid = video_id(i)
    g = time_grid(p.fps)
    rng = np.random.default_rng([p.seed, 0, i])
    n_frames = max(2 * g, round(rng.uniform(p.min_duration, p.max_duration) * p.fps / g) * g)
    objs = make_scene(rng, n_frames, p.width, p.height, g, p.fps, tuple(p.event_fraction),
                      tuple(p.objects_per_video))
    encode_mp4(Path(p.out_dir) / "videos" / f"{vid}.mp4", render_video(objs, n_frames, p.width, p.height), p.fps,
               p.width, p.height)
    return (vid, *annotate(vid, objs, n_frames, rng, p.fps, g))


def one_track(p: SynthesizeParams, j: int) -> dict:
    seq = f"GOT-10k_Syn_{j + 1:06d}"
    return {"path": f"got10k/{seq}",
            **write_track(Path(p.out_dir) / "got10k" / seq, np.random.default_rng([p.seed, 1, j]), p)}


def run_all(fn, p: SynthesizeParams, n: int) -> list:
    """[fn(p, k) for k in range(n)], in p.workers processes; results in order, bytes the same at any count."""
    workers = min(p.workers or os.cpu_count() or 1, n)
    if workers <= 1:
        return [fn(p, k) for k in range(n)]
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        return list(pool.map(fn, [p] * n, range(n), chunksize=max(1, n // (8 * workers))))


def synthesize(p: SynthesizeParams) -> dict:
    """Write videos/, got10k/ and annotations/ under p.out_dir (replacing them); return counts."""
    check(p)
    out = Path(p.out_dir)
    for sub in ("videos", "got10k", "annotations"):
        shutil.rmtree(out / sub, ignore_errors=True)
    charades, nextgqa, mcq = {}, [], []
    for vid, sta, gqa_rows, mcq_rows in run_all(one_video, p, p.num_videos):
        charades[vid] = sta
        nextgqa += gqa_rows
        mcq += mcq_rows
    got = run_all(one_track, p, p.num_tracking_sequences)
    ann = out / "annotations"
    write_json(ann / "charades_sta.json", charades)
    write_json(ann / "nextgqa.json", nextgqa)
    write_json(ann / "mcq.json", mcq)
    write_json(ann / "got10k.json", got)
    return {"out_dir": str(out), "videos": p.num_videos, "tracking_sequences": len(got),
            "tg_queries": sum(len(v["sentences"]) for v in charades.values()), "gqa_questions": len(nextgqa),
            "qa_questions": len(mcq), "time_grid_s": round(time_grid(p.fps) / p.fps, 6)}
