"""The real local stack for the flow tests, started once per session on 127.0.0.1 (infra/stack.py): PostgreSQL,
an S3-compatible server, MLflow (PostgreSQL + S3 artifacts) and a Prefect server (PostgreSQL) with the work pools,
GPU limit, S3 result storage and zombie automation the flows use. Helpers for machines and workers: machines.py.
"""
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) puts only the test folders on sys.path
    sys.path.insert(0, str(ROOT))

from tests.flows.machines import ZOMBIE_AFTER_S  # noqa: E402
from tests.stack_helpers import postgres_or_fail  # noqa: E402 (same policy: fail as root/CI, else skip)


@pytest.fixture(scope="session")
def stack():
    """The stack's state (services, env); stopped at the end of the session."""
    from infra.stack import down, up

    root = Path(tempfile.mkdtemp(prefix="videorft-flows-stack-"))
    root.chmod(0o755)  # the server runs as user postgres, which must reach its cluster below
    pg = postgres_or_fail(root / "pg")
    try:
        yield up(root / "stack", "postgres", gpu_slots=1, zombie_after_s=ZOMBIE_AFTER_S, postgres=pg)
    finally:
        down(root / "stack")
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
