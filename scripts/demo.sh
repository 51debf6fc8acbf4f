#!/usr/bin/env bash
# README command 1: install (if needed) and run the whole pipeline on the embedded default with DVC.
# Extra arguments go to `dvc repro` (e.g. --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
. scripts/env.sh
dvc repro "$@"
videorft summary
