"""What a load of a stack is asked for: the global options of the command line, as data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadOptions:
    """Inputs of `stackd.spec.load.load()`; the CLI fills it from `-f`, `-p`, `--env-file`…

    `environ` is the process environment to read (injected, never read from os.environ inside
    the spec package), `working_dir` the directory relative paths of `files` start from.
    """

    files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = "."
    interpolate: bool = True
    stdin_text: str | None = None
