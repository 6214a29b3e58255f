"""scripts/bootstrap.sh is idempotent: run again with nothing changed, it keeps the built liar._C."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bootstrap() -> str:
    done = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_a_second_bootstrap_does_not_rebuild():
    # The first call builds only where .venv has no matching stamp yet (CI has just bootstrapped: it reuses).
    bootstrap()
    extension = sorted((ROOT / "liar").glob("_C*.so"))
    assert len(extension) == 1, extension
    built = extension[0].stat().st_mtime_ns
    again = bootstrap()
    assert "reusing the built liar._C" in again and "building liar._C" not in again
    assert extension[0].stat().st_mtime_ns == built
    assert "1/5" in again and "5/5" in again and again.rstrip().splitlines()[-1].endswith(")")
