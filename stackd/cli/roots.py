"""Where the CLI finds stackd's roots: the environment, else the defaults of stackd.roots."""

from __future__ import annotations

import os
from pathlib import Path

from stackd.roots import DEFAULT_RUN_ROOT, DEFAULT_STATE_ROOT


def state_root(environ: dict[str, str] | None = None) -> Path:
    """$STACKD_STATE_ROOT, else /var/lib/stackd."""
    env = os.environ if environ is None else environ
    return Path(env.get("STACKD_STATE_ROOT") or DEFAULT_STATE_ROOT)


def run_root(environ: dict[str, str] | None = None) -> Path:
    """$STACKD_RUN_ROOT, else /run/stackd."""
    env = os.environ if environ is None else environ
    return Path(env.get("STACKD_RUN_ROOT") or DEFAULT_RUN_ROOT)
