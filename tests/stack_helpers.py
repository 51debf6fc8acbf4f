"""Helpers shared by the conftests that start real services (tests/services, tests/flows)."""
import os
from pathlib import Path

import pytest

from infra.devstack import Postgres, ServiceError, find_pg_bin


def postgres_or_fail(root: Path) -> Postgres:
    """A private PostgreSQL cluster started in `root`. Binaries missing: as root or in CI (which can install them)
    the test fails; only a non-root developer without them gets a skip, with the reason in the summary."""
    missing = [b for b in ("initdb", "pg_ctl", "psql") if not find_pg_bin(b)]
    if missing:
        reason = f"PostgreSQL binaries {missing} not found (apt-get install postgresql)"
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(f"{reason}: required here (root/CI can install them)", pytrace=False)
        pytest.skip(f"!!! POSTGRES TESTS SKIPPED: {reason}; not root, cannot install them")
    try:
        return Postgres(root).start()
    except ServiceError as e:
        pytest.fail(f"PostgreSQL did not start: {e}", pytrace=False)
