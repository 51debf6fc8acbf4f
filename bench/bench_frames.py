"""Frame extraction speed, side by side in one run: videorft's extract_frames vs qwen-vl-utils' fetch_video.

    python bench/bench_frames.py [--rounds 3] [--workdir /tmp/videorft-bench] [--out results.json]

Same videos (camera-like H.264 clips of 10-30 s, 640x360 and 1280x720, 25 fps; bench/common.py), same budget
(2 fps, min/max pixels per frame) and the same output frame count and size for both (checked before timing).
What is timed:
  1. single process on ONE core (both pinned with sched_setaffinity, so FFmpeg's automatic threading also gets
     one core): fetch_video (decord backend, as VideoChat-R1 uses it; returns a float tensor) vs our stage's
     per-video work (decode + resize + write the cache entry) with backend pyav and with backend decord;
  2. the extract_frames stage over all clips with workers=1 on one core vs workers=2 on two cores (fresh cache
     each time, so everything is decoded; the second figure includes starting the worker processes), next to
     what the machine gives two busy-loop processes at that moment (its ceiling: 2.0 when idle);
  3. loading a sample's frames from the frame cache (stages/video/frames.py, read fully) vs decoding them (our
     fastest path).
Rounds interleave the methods and the medians are reported, with CPU-time ratios next to wall-time ones: the
machine may be shared, and CPU time is what a busy neighbour disturbs least.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # read at import time by qwen_vl_utils
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import make_clip, median  # noqa: E402
from stages.extract_frames import extract_frames  # noqa: E402
from stages.ingest import ingest  # noqa: E402
from stages.io import read_jsonl  # noqa: E402
from stages.params import ExtractFramesParams, IngestParams  # noqa: E402
from stages.video.decode import read_frames  # noqa: E402
from stages.video.extract import plan_for, work  # noqa: E402
from stages.video.frames import read_cached  # noqa: E402

# (seconds, width, height) per clip: 10-30 s, two resolutions
CLIPS = [(20, 640, 360), (30, 640, 360), (10, 640, 360), (25, 640, 360), (15, 640, 360), (28, 640, 360),
         (12, 1280, 720), (20, 1280, 720), (10, 1280, 720), (15, 1280, 720), (24, 1280, 720), (18, 1280, 720)]
MIN_PIXELS, MAX_PIXELS = 16 * 28 * 28, 256 * 28 * 28  # per frame; 360p and 720p both become 336x588
TOTAL_PIXELS = 10**12  # no per-video cap: the per-frame bound decides, identically for both


def clips(workdir: Path) -> Path:
    """Generate the clips once (kept in workdir between runs); returns their folder, holding only them."""
    folder = workdir / "clips"
    wanted = set()
    for i, (sec, w, h) in enumerate(CLIPS):
        path = folder / f"clip{i:02d}_{w}x{h}_{sec}s.mp4"
        wanted.add(path.name)
        if not path.exists():
            print(f"generating {path.name} ...", file=sys.stderr, flush=True)
            make_clip(path, sec, w, h, fps=25.0, seed=i)
    for stale in folder.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    return folder


def params(**kw) -> ExtractFramesParams:
    return ExtractFramesParams(fps=2.0, min_frames=4, max_frames=768, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                               total_pixels=TOTAL_PIXELS, progress=False, **kw)


def qwen_element(path: str) -> dict:
    return {"video": path, "fps": 2.0, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
            "total_pixels": TOTAL_PIXELS}


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def single_process(rows: list[dict], rounds: int, scratch: Path) -> dict:
    """Per round and method: wall and CPU seconds to produce every clip's frames, on one core."""
    import torch
    from qwen_vl_utils import fetch_video

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    frames_out = 0
    for row in rows:  # same output (frame count and size) before anything is timed
        plan = plan_for(row, params())
        shape = tuple(fetch_video(qwen_element(row["path"])).shape)
        ours = (plan.num_frames, 3, plan.height, plan.width)
        if shape != ours:
            raise SystemExit(f"{row['id']}: fetch_video gives {shape}, extract_frames {ours}: not the same output")
        frames_out += plan.num_frames

    def ours(backend: str):
        def run():
            root = Path(tempfile.mkdtemp(dir=scratch))
            for row in rows:
                status, value = work(row, params(backend=backend), str(root))  # the stage's per-video path
                assert status == "decoded", value
            shutil.rmtree(root)
        return run

    methods = {"fetch_video": lambda: [fetch_video(qwen_element(r["path"])) for r in rows],
               "ours_pyav": ours("pyav"), "ours_decord": ours("decord")}
    times = {m: {"wall": [], "cpu": []} for m in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            wall, cpu, _ = clock(fn)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    out = {"frames_out": frames_out}
    for name, t in times.items():
        out[name] = {"wall_s": median(t["wall"]), "cpu_s": median(t["cpu"]),
                     "frames_per_s": frames_out / median(t["wall"])}
    return out


def spin(n: int) -> None:
    x = 0
    for i in range(n):
        x += i * i


def machine_ceiling(cores: list[int], n: int = 6_000_000) -> float:
    """What the machine gives two processes now: throughput of 2 busy loops on 2 cores / 1 on one core."""
    import concurrent.futures as cf
    import multiprocessing

    walls = {}
    for k in (1, 2):
        os.sched_setaffinity(0, set(cores[:k]))
        with cf.ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(spin, [1000] * k))  # workers up before the clock starts
            t = time.perf_counter()
            list(pool.map(spin, [n] * k))
            walls[k] = time.perf_counter() - t
    return 2 * walls[1] / walls[2]


def parallel(raw: Path, rounds: int, scratch: Path, cores: list[int]) -> dict:
    """The whole extract_frames stage: workers=1 on one core vs workers=2 on two cores (fresh cache each time).

    The same rounds measure what the machine gives two processes at that moment (machine_ceiling: 2.0 on an idle
    2-core machine, less when other work holds a core), and the CPU the stage got per second of wall time
    (cores_used). The stage's speed-up is to be read against the ceiling: efficiency = speedup / ceiling."""
    runs, ceilings = {1: [], 2: []}, []
    for _ in range(rounds):
        ceilings.append(machine_ceiling(cores))
        for workers in (1, 2):
            os.sched_setaffinity(0, set(cores[:workers]))  # inherited by the worker processes
            root = Path(tempfile.mkdtemp(dir=scratch))
            p = params(raw_dir=str(raw), out_dir=str(root / "frames"), cache_dir=str(root / "cache"), workers=workers)
            wall, _, counts = clock(lambda: extract_frames(p))
            assert counts["decoded"] == counts["seen"], counts
            runs[workers].append((wall, counts["cpu_s"]))
            shutil.rmtree(root)
    os.sched_setaffinity(0, set(cores))
    wall = {w: median([r[0] for r in runs[w]]) for w in runs}
    cpu = {w: median([r[1] for r in runs[w]]) for w in runs}
    speedup = wall[1] / wall[2]
    return {"workers_1_wall_s": wall[1], "workers_2_wall_s": wall[2], "speedup": speedup,
            "machine_ceiling": median(ceilings), "efficiency": speedup / median(ceilings),
            "cores_used_1": cpu[1] / wall[1], "cores_used_2": cpu[2] / wall[2], "cpu_overhead": cpu[2] / cpu[1],
            "all_runs": {str(w): runs[w] for w in runs}, "all_ceilings": ceilings}


def cache_vs_decode(raw: Path, rows: list[dict], scratch: Path, repeat: int = 5) -> dict:
    """Per clip: reading the cached frames (stages/video/frames.py, fully) vs decoding them again (pyav, one
    thread)."""
    root = Path(tempfile.mkdtemp(dir=scratch))
    p = params(raw_dir=str(raw), out_dir=str(root / "frames"), cache_dir=str(root / "cache"))
    extract_frames(p)
    load, decode = [], []
    for row in rows:
        plan = plan_for(row, p)
        path = root / "frames" / f"{row['id']}.npy"
        load.append(min(clock(lambda: read_cached(path, mmap=False, meta=False))[0]  # read fully, not memory-mapped
                        for _ in range(repeat)))
        decode.append(min(clock(lambda: read_frames(row["path"], plan.indices, "pyav", (plan.height, plan.width)))[0]
                          for _ in range(2)))
    shutil.rmtree(root)
    return {"load_s": sum(load), "decode_s": sum(decode), "speedup": sum(decode) / sum(load),
            "min_per_video_speedup": min(d / max(x, 1e-9) for d, x in zip(decode, load))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "videorft-bench"))
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--parts", default="single,parallel,cache", help="which measurements (comma-separated)")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    folder = clips(workdir)
    raw = workdir / "raw"
    ingest(IngestParams(source=str(folder), frame_folders=None, out_dir=str(raw), cache_dir=str(workdir / "cache"),
                        progress=False))
    rows = read_jsonl(raw / "manifest.jsonl")
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=workdir))
    cores = sorted(os.sched_getaffinity(0))[:2]
    t0 = time.perf_counter()
    parts = set(args.parts.split(","))
    single, par, cache = {}, {}, {}
    try:
        if "single" in parts:
            single = single_process(rows, args.rounds, scratch)
        if "parallel" in parts:
            par = parallel(raw, args.rounds, scratch, cores) if len(cores) >= 2 else {"skipped": "fewer than 2 cores"}
        if "cache" in parts:
            cache = cache_vs_decode(raw, rows, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratios = {}
    if single:
        fv, pa, de = single["fetch_video"], single["ours_pyav"], single["ours_decord"]
        ratios.update({
            "pyav_vs_fetch_video_wall": fv["wall_s"] / pa["wall_s"], "pyav_vs_fetch_video_cpu": fv["cpu_s"] / pa["cpu_s"],
            "decord_vs_fetch_video_wall": fv["wall_s"] / de["wall_s"],
            "decord_vs_fetch_video_cpu": fv["cpu_s"] / de["cpu_s"],
            "pyav_vs_decord_wall": de["wall_s"] / pa["wall_s"], "pyav_vs_decord_cpu": de["cpu_s"] / pa["cpu_s"]})
    if "speedup" in par:
        ratios.update({"two_workers_vs_one": par["speedup"], "machine_two_process_ceiling": par["machine_ceiling"]})
    if cache:
        ratios["cache_load_vs_decode"] = cache["speedup"]
    result = {
        "clips": [{"id": r["id"], "width": r["width"], "height": r["height"], "seconds": r["duration"],
                   "mbit_per_s": round(r["bytes"] * 8 / r["duration"] / 1e6, 2)} for r in rows],
        "budget": {"fps": 2.0, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}, "rounds": args.rounds,
        "single_process": single, "parallel": par, "cache": cache, "ratios": ratios,
        "load_average": os.getloadavg(), "cpus": os.cpu_count(), "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"{len(rows)} clips, {sum(r['duration'] for r in rows):.0f} s of video, {args.rounds} rounds, "
          f"load average {result['load_average'][0]:.1f} on {result['cpus']} CPUs")
    if single:
        print(f"{'single process, one core':32s} {'wall s':>8s} {'cpu s':>8s} {'frames/s':>9s}  "
              f"({single['frames_out']} frames out, 2 fps, <= {MAX_PIXELS} px per frame)")
        for name in ("fetch_video", "ours_pyav", "ours_decord"):
            m = single[name]
            print(f"  {name:30s} {m['wall_s']:8.2f} {m['cpu_s']:8.2f} {m['frames_per_s']:9.1f}")
    for k, v in ratios.items():
        print(f"  {k:40s} {v:6.2f}x")
    if "cores_used_2" in par:
        print(f"  extract_frames stage: workers=1 {par['workers_1_wall_s']:.2f} s using {par['cores_used_1']:.2f} cores, "
              f"workers=2 {par['workers_2_wall_s']:.2f} s using {par['cores_used_2']:.2f} cores "
              f"(CPU x{par['cpu_overhead']:.2f}); efficiency vs the machine's ceiling {par['efficiency']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
