#!/usr/bin/env bash
# The CPU micro-reproduction of VideoChat-R1's claim (recipes/micro-repro.yaml): install (if needed), then warm
# start, GRPO on 0/N/2N/4N samples per task, evaluation, curve and MLflow run, in runs/micro-repro.
# Extra arguments go to recipes/micro_repro.py (e.g. --sizes 0,16 or -S train.learning_rate=1e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
. scripts/env.sh
python recipes/micro_repro.py "$@"
