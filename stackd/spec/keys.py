"""Check keys against the models (unknown key → did-you-mean) and build the models' plain input.

The shape of every model (which keys it takes, which of them hold nested models) comes from
the models' field annotations, generated into `schema_data.SHAPES`: the models stay the one
table of known keys, and loading needs no pydantic import.
"""

from __future__ import annotations

from typing import Any

from stackd.errors import SpecError
from stackd.spec.schema import Child, shapes
from stackd.spec.source import Node, Path, error_at

__all__ = ["Child", "model_input", "shape", "suggest"]

_EXT = "#extensions"


def shape(model: str) -> dict[str, Child]:
    """Key → child descriptor for one model, by name (the `extensions` field excluded)."""
    return shapes()[model]


def suggest(key: str, known: Any) -> str:
    """`; did you mean "image"?` or an empty string."""
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def model_input(root: Node, value: Any, model: str, path: Path) -> Any:
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


def _nested(root: Node, item: Any, child: tuple[str, str], path: Path) -> Any:
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
