"""Check keys against the models (unknown key → did-you-mean) and build the models' plain input.

The shape of every model (which keys it takes, which of them hold nested models) is read once
from the pydantic field annotations, so the models are the one table of known keys.
"""

from __future__ import annotations

import difflib
import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel

from stackd.errors import SpecError
from stackd.spec.source import Node, Path, error_at

# child descriptor: None (opaque: copy as plain data) or (kind, model) with kind one of
# "model" (a mapping for the model), "map" (mapping of models), "list" (list of models)
Child = tuple[str, type[BaseModel]] | None

_EXT = "#extensions"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside `X | None`, `int | X`... (None if there is none)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _child(annotation: Any) -> Child:
    model = _model_in(annotation)
    if model is not None:
        return ("model", model)
    args: tuple[Any, ...] = ()
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) in (dict, list):
                annotation, origin = arg, typing.get_origin(arg)
                break
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        inner = _model_in(args[1])
        return ("map", inner) if inner is not None else None
    if origin is list and args:
        inner = _model_in(args[0])
        return ("list", inner) if inner is not None else None
    return None


@cache
def shape(model: type[BaseModel]) -> dict[str, Child]:
    """Key → child descriptor for one model (the `extensions` field excluded)."""
    out: dict[str, Child] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key == _EXT:
            continue
        out[key] = _child(info.annotation)
    return out


def suggest(key: str, known: Any) -> str:
    """`; did you mean "image"?` or an empty string."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def model_input(root: Node, value: Any, model: type[BaseModel], path: Path) -> Any:
    """The plain input for `model` from a canonical subtree; unknown keys are SpecErrors and
    `x-` keys move under `#extensions`. Non-mappings pass through for pydantic to report."""
    if not isinstance(value, dict):
        return _plain(value)
    known = shape(model)
    out: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for key, item in value.items():
        if key in known:
            child = known[key]
            out[key] = _plain(item) if child is None else _nested(root, item, child, (*path, key))
        elif key.startswith(("x-", "X-")):
            extensions[key] = _plain(item)
        else:
            raise _unknown(root, value, key, known, path)
    if extensions:
        out[_EXT] = extensions
    return out


def _unknown(root: Node, value: Any, key: str, known: dict[str, Child], path: Path) -> SpecError:
    err = error_at(root, (*path, key), f"unknown key{suggest(key, known)}")
    if isinstance(value, Node) and key in value.key_pos:
        err = SpecError(err.message, position=value.key_pos[key], path=err.path)
    return err


def _nested(root: Node, item: Any, child: tuple[str, type[BaseModel]], path: Path) -> Any:
    kind, model = child
    if kind == "model":
        return model_input(root, item, model, path)
    if kind == "map" and isinstance(item, dict):
        return {k: model_input(root, v, model, (*path, k)) for k, v in item.items()}
    if kind == "list" and isinstance(item, list):
        return [model_input(root, v, model, (*path, i)) for i, v in enumerate(item)]
    return _plain(item)


def _plain(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_plain(v) for v in tree]
    return tree
