#!/usr/bin/env bash
# Install videorft into .venv (idempotent). torch first and pinned, then the rest under constraints.txt,
# then the CPU-torchvision fix. Usage: bash scripts/install.sh [extra...]   (default extras: test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
EXTRAS=${1:-test}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.videorft-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "videorft: install up to date (.venv)"
else
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }  # local index noise
  quiet pip install -q --upgrade pip
  # torch first: here the CPU wheel; an unpinned torch would pull several GB of CUDA packages.
  quiet pip install -q "torch==2.13.0"
  quiet pip install -q -c constraints.txt -e ".[$EXTRAS]"
  python scripts/fix_torchvision.py
  echo "$want" > "$stamp"
  echo "videorft: installed into .venv"
fi
# this clone's `dvc plots show` page with Vega inline: it draws without internet (stages/plots_page.py)
python -m stages.plots_page
