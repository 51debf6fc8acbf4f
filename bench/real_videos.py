"""Per corpus file (tests/data/video_corpus.py): what ingest records and extract_frames samples vs the reference.

    PYTHONPATH=. python bench/real_videos.py [--json out.json]

Columns: reference duration / ours, max error of the planned frames' times vs their real pts (in frame
intervals), whether every sampled frame equals the full decode's, and decord's verdict. Works on older trees of
this project too (it only calls probe_video, plan_for and read_frames), which is how docs/data.md's "before"
figures were taken.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH first: measures another tree too

from stages.params import ExtractFramesParams  # noqa: E402
from stages.video import decode  # noqa: E402
from stages.video.extract import plan_for  # noqa: E402
from tests.data.video_corpus import decode_all, make_variants, reference, registry_files  # noqa: E402

PARAMS = ExtractFramesParams(fps=2.0, max_frames=16, max_pixels=64 * 28 * 28, total_pixels=512 * 28 * 28)


def measure(path: Path) -> dict:
    ref = reference(path)
    row = {"ref_duration": round(ref.duration, 3), "ref_frames": len(ref.times), "interval": round(ref.interval, 4)}
    try:
        info = decode.probe_video(path)
    except decode.DecodeError as e:
        return {**row, "quarantined": str(e)[:90]}
    row.update(duration=round(info.duration, 3), frames=info.frames, size=f"{info.width}x{info.height}")
    try:
        plan = plan_for({"kind": "video", "path": str(path), **info.as_dict()}, PARAMS)
        got = decode.read_frames(path, plan.indices, backend="pyav", size=(plan.height, plan.width))
    except (ValueError, decode.DecodeError) as e:
        return {**row, "extract_quarantined": str(e)[:90]}
    real = np.asarray(ref.times)[[min(i, len(ref.times) - 1) for i in plan.indices]]
    row["max_time_err_intervals"] = round(float(np.abs(np.asarray(plan.timestamps) - real).max()) / ref.interval, 3)
    full = decode_all(path, (plan.height, plan.width))
    same = [i < len(full) and got[k].shape == full[i].shape and np.array_equal(got[k], full[i])
            for k, i in enumerate(plan.indices)]
    row["frames_equal"] = f"{sum(same)}/{len(same)}"
    try:
        d = decode.read_frames(path, plan.indices, backend="decord")
        ref_full = decode_all(path, None)
        ok = sum(d[k].shape == ref_full[i].shape and np.abs(d[k].astype(int) - ref_full[i]).mean() <= 0.5
                 for k, i in enumerate(plan.indices))
        row["decord"] = f"{ok}/{len(plan.indices)} equal"
    except Exception as e:  # noqa: BLE001 - reported, that is the point
        row["decord"] = "refused: " + str(e)[:70]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    files = {**registry_files(), **make_variants()}
    out = {name: (measure(p) if p else {"absent": True}) for name, p in files.items()}
    for name, row in out.items():
        print(f"{name:28s} {json.dumps(row)}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
