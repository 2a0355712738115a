"""Load a stack: resolve → canonical → profiles → models → validate, composed in `load()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from stackd.errors import SpecError
from stackd.spec.options import LoadOptions
from stackd.spec.source import Node

if TYPE_CHECKING:
    from stackd.spec.models import Stack


@dataclass(frozen=True)
class Project:
    """A loaded stack and where it came from.

    `tree` is the canonical positioned tree (what `stackd config` prints and hashes); `stack`
    the model of the same content, built on first use (loading validated it already, without
    importing pydantic); `disabled` the services profiles switched off.
    With `LoadOptions(interpolate=False)` the tree may keep `${...}` text and `stack` may be an
    unvalidated placeholder: such a project is for display (`config --no-interpolate`) only.
    """

    data: Any
    name: str
    directory: str
    files: tuple[str, ...]
    environment: dict[str, str]
    tree: Node
    warnings: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    profiles: tuple[str, ...] = field(default=())
    raw: bool = False

    @cached_property
    def stack(self) -> Stack:
        """The validated `Stack` model (pydantic is imported here, on first use)."""
        from stackd.spec.models import Stack

        if self.raw:
            return Stack.model_construct(name=self.name)
        return Stack.model_validate(self.data)


def load(
    options: LoadOptions,
    *,
    services: tuple[str, ...] = (),
    normalize: bool = True,
    consistency: bool = True,
) -> Project:
    """Load the project the options name; raises SpecError (with file:line:col) on any mistake.

    `services` named explicitly enable their profiles (as `docker compose up svc` does);
    `normalize=False` skips what compose-go's SkipNormalization skips (see `canonicalize`),
    `consistency=False` the cross-reference checks (compose-go's SkipConsistencyCheck).
    """
    from stackd.spec.resolve import resolve

    resolved = resolve(options)
    return build_project(
        resolved.tree,
        options,
        name=resolved.project_name,
        directory=resolved.project_directory,
        files=resolved.files,
        environment=dict(resolved.environment),
        warnings=tuple(resolved.warnings),
        services=services,
        normalize=normalize,
        consistency=consistency,
    )


def build_project(
    tree: Any,
    options: LoadOptions,
    *,
    name: str,
    directory: str,
    files: tuple[str, ...],
    environment: dict[str, str],
    warnings: tuple[str, ...] = (),
    services: tuple[str, ...] = (),
    normalize: bool = True,
    consistency: bool = True,
) -> Project:
    """The back half of `load()`, from a resolved positioned tree."""
    from pydantic_core import ValidationError

    from stackd.spec.canonical import canonicalize
    from stackd.spec.keys import model_input
    from stackd.spec.profiles import active_profiles, apply_profiles, profiles_of_services
    from stackd.spec.validate import check_references, translate

    if tree is None:
        tree = Node()
    if isinstance(tree, Node) and "version" in tree and not any("version" in w for w in warnings):
        where = tree.key_pos.get("version")
        warnings = (*warnings, f"{where.file if where else 'stack file'}: the attribute `version` is obsolete and ignored; remove it")
    if not isinstance(tree, Node):
        raise SpecError("a stack file must be a mapping with a services key", position=getattr(tree, "pos", None))
    raw = not options.interpolate
    canonicalize(tree, project_name=name, project_dir=directory, environment=environment, normalize=normalize, raw=raw)
    all_profiles = sorted({p for s in tree["services"].values() for p in s.get("profiles") or () if isinstance(p, str)})
    active = active_profiles(options.profiles, options.environ) | profiles_of_services(tree, services)
    disabled = apply_profiles(tree, active)
    from stackd.spec.schema import validator

    data = model_input(tree, tree, "Stack", ())
    try:
        validator().validate_python(data)
    except ValidationError as exc:
        if not raw:
            raise translate(tree, exc) from None
        # uninterpolated `${...}` text cannot be typed: the stack is for display only
    if consistency and not raw:
        check_references(tree)
    return Project(
        data=data,
        name=name,
        directory=directory,
        files=files,
        environment=environment,
        tree=tree,
        warnings=warnings,
        disabled=disabled,
        profiles=tuple(all_profiles),
        raw=raw,
    )
