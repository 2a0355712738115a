"""Build the variable set for interpolation: the process environment over `.env`/`--env-file`s."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from stackd.errors import SpecError
from stackd.spec.dotenv import read_dotenv


def env_files_for(env_files: Sequence[str], directory: str, working_dir: str, environ: Mapping[str, str]) -> list[str]:
    """The env files to read: `--env-file`s (against the working dir), else `<directory>/.env`.

    `COMPOSE_DISABLE_ENV_FILE=true` in the environment disables the default `.env`.
    """
    if env_files:
        return [os.path.normpath(os.path.join(os.path.abspath(working_dir), f)) for f in env_files]
    if environ.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "true", "t"):
        return []
    default = os.path.join(directory, ".env")
    return [default] if os.path.isfile(default) else []


def read_env_files(files: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the env files define, later files winning; values may use `environ`."""
    out: dict[str, str] = {}
    for path in files:
        if os.path.isdir(path):
            raise SpecError(f"{path} is a directory, not an env file")

        def lookup(name: str) -> str | None:
            return environ[name] if name in environ else out.get(name)

        read_dotenv(path, lookup, out)
    return out


def build_environment(environ: Mapping[str, str], files: Sequence[str]) -> dict[str, str]:
    """Interpolation variables: env file values, overridden by the process environment."""
    out = read_env_files(files, environ)
    out.update(environ)
    return out
