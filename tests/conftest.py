"""Session-wide test settings: every test runs with its own state roots, never /var/lib/stackd."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Guard: nothing under test may default to the real state roots.
    os.environ.setdefault("STACKD_STATE_ROOT", "/nonexistent/stackd-tests-must-inject-roots")
    os.environ.setdefault("STACKD_RUN_ROOT", "/nonexistent/stackd-tests-must-inject-roots")


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
