"""Ingest's fetch step on the demo's local data: item-wise (hash in place, hardlink, one index record per item;
stages.ingest.fetch_all) against the file-wise path it replaced (each file through a temp link and a rename, one
index file per file; rebuilt here from the store's own calls), side by side on a cold cache, interleaved rounds.

    python bench/bench_ingest.py --work runs/ds17 --rounds 3

The work dir must hold the demo's synthetic data (data/synthetic: bench/demo_seeds.py makes it).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.ingest import fetch_all, sources  # noqa: E402
from stages.params import IngestParams  # noqa: E402
from stages.sources.store import Store  # noqa: E402


def file_wise(pairs, store: Store, workers: int) -> int:
    """The previous path: per file a temp name, a link, a hash, a rename and an index file of its own."""
    def one(src, f):
        sha, size, version = store.put(lambda tmp: src.fetch(f, tmp))
        store.record(f.uri, {f.uri: {"size": size, "version": version, "sha256": sha}})

    files = [(src, f) for src, item in pairs for f in item.files + item.sidecars]
    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda a: one(*a), files))
    return len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/demo-seeds")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    syn = (ROOT / args.work / "data" / "synthetic").resolve()
    p = IngestParams(source=str(syn / "videos"), frame_folders=str(syn / "got10k"), progress=False)
    pairs = sources(p)
    times: dict[str, list[float]] = {"file-wise": [], "item-wise": []}
    with tempfile.TemporaryDirectory(dir=ROOT / args.work) as d:  # same filesystem: hardlinks
        for r in range(args.rounds):
            for name in (("file-wise", "item-wise") if r % 2 == 0 else ("item-wise", "file-wise")):
                store = Store(Path(d) / f"{name}-{r}")
                t0 = time.perf_counter()
                if name == "file-wise":
                    n = file_wise(pairs, store, p.workers)
                else:
                    done, stats = fetch_all(pairs, store, p)
                    n = stats["files_fetched"]
                times[name].append(time.perf_counter() - t0)
                print(f"round {r} {name}: {times[name][-1]:.2f} s for {n} files", flush=True)
                shutil.rmtree(store.root)
    for name, v in times.items():
        print(f"{name}: min {min(v):.2f} s, median {statistics.median(v):.2f} s")
    print(f"file-wise / item-wise: min {min(times['file-wise']) / min(times['item-wise']):.1f}x, "
          f"median {statistics.median(times['file-wise']) / statistics.median(times['item-wise']):.1f}x")


if __name__ == "__main__":
    main()
