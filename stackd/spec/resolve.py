"""Compose the front half of loading: files → environment → interpolation → include/extends → merge.

`resolve(options)` returns a `Resolved`: one positioned tree with every file merged in, ready for
the back half (canonical syntax, models, validation) in `stackd.spec.load`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stackd.errors import SpecError
from stackd.spec.options import LoadOptions
from stackd.spec.source import Node

if TYPE_CHECKING:
    from stackd.spec.interpolate import Variable


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
    from stackd.spec.environment import build_environment, env_files_for
    from stackd.spec.extends import Context, parse_file
    from stackd.spec.include import load_project
    from stackd.spec.interpolate import TemplateError, substitute
    from stackd.spec.project import project_name, stack_files

    environ = options.environ
    working_dir = os.path.abspath(options.working_dir)
    explicit_dir = (
        os.path.normpath(os.path.join(working_dir, options.project_directory)) if options.project_directory else None
    )
    first = next((f for f in options.files if f != "-"), None)
    env_dir = explicit_dir or (os.path.dirname(os.path.join(working_dir, first)) if first else working_dir)
    env_files = env_files_for(options.env_files, env_dir, working_dir, environ)
    environment = build_environment(environ, env_files)
    files = stack_files(options.files, environment, working_dir)
    first_file = next((f for f in files if f != "-"), None)
    directory = explicit_dir or (os.path.dirname(first_file) if first_file else working_dir)
    ctx = Context(environment, environ, options.interpolate, options.stdin_text, working_dir=working_dir)
    yaml_name = None
    for path in files:
        raw = ctx.parsed[path] = parse_file(path, ctx)
        value = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(value, str) and value:
            try:
                yaml_name = substitute(value, environment.get) if options.interpolate else value
            except TemplateError as exc:
                raise SpecError(str(exc), position=raw.position_of("name"), path="name") from None
    name = project_name(options.project_name, environment, yaml_name, directory)
    environment["COMPOSE_PROJECT_NAME"] = name
    tree = load_project(files, ctx, directory, ())
    tree.set("name", name, tree.val_pos.get("name"), tree.key_pos.get("name"))
    return Resolved(tree, name, directory, tuple(files), environment, ctx.warnings)


def variables(options: LoadOptions) -> list[Variable]:
    """The variables the stack files use (for `config --variables`), without interpolating.

    Every `-f` file is read on its own before the merge, as compose-go does, so a variable in a
    value a later file overrides or resets is listed too; then those of included and extended
    files (in the merged tree). In order of first use; a later use fills in a default the
    first one did not give.
    """
    from dataclasses import replace

    from stackd.spec.extends import Context, parse_file
    from stackd.spec.interpolate import list_variables, merge_variables

    plain = replace(options, interpolate=False)
    resolved = resolve(plain)
    ctx = Context({}, options.environ, False, options.stdin_text, working_dir=os.path.abspath(options.working_dir))
    found = [list_variables(parse_file(path, ctx)) for path in resolved.files]
    return merge_variables([*found, list_variables(resolved.tree)])
