"""Session-wide test settings: every test runs with its own state roots, never /var/lib/stackd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Guard: nothing under test may default to the real state roots.
    os.environ.setdefault("STACKD_STATE_ROOT", "/nonexistent/stackd-tests-must-inject-roots")
    os.environ.setdefault("STACKD_RUN_ROOT", "/nonexistent/stackd-tests-must-inject-roots")


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repository beside a copy of shared/ (the corpus lives there).
CORPUS = REPO_ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus: public Compose files and compose-go's loader fixtures."""
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}: CI lays shared/ beside the repository")
    return CORPUS


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the empty `/stackd-test` cgroup parents tests created (busy ones stay for the last worker)."""
    base = Path("/sys/fs/cgroup")
    for parent in sorted(base.glob("*/stackd-test*")) + sorted(base.glob("stackd-test*")):
        if parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                pass
