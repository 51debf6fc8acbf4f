#!/usr/bin/env bash
# The loopback stack without docker: PostgreSQL, S3 (moto), MLflow and Prefect servers on 127.0.0.1.
#
#   infra/dev-stack.sh up [--backend postgres|sqlite] [--gpu-slots N]   start; writes .dev-stack/stack.env
#   source .dev-stack/stack.env                                         point videorft/prefect/mlflow/dvc at it
#   infra/dev-stack.sh status                                           health of each service (exit 1: one is down)
#   infra/dev-stack.sh down                                             stop everything
#
# DEV_STACK_DIR overrides the state folder (default: .dev-stack in the repository root).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
case "$cmd" in
  up|down|status|env) shift ;;
  *) echo "usage: $0 up|down|status|env [options]" >&2; exit 2 ;;
esac
cd "$root"
py="$root/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)"
# shellcheck disable=SC1091
. "$root/scripts/env.sh"
exec "$py" -m infra.stack "$cmd" --dir "${DEV_STACK_DIR:-$root/.dev-stack}" "$@"
