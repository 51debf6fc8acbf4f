"""Stage synthesize: generate the synthetic benchmark (videos, GOT-10k style frame folders, annotations)."""
from __future__ import annotations

import json
import time

from stages.datasets.synthetic import synthesize
from stages.params import load_params


def main() -> None:
    t0 = time.perf_counter()
    summary = synthesize(load_params().synthesize)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
