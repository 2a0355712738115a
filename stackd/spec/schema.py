"""The models as data: their key shapes and a pydantic-core schema, generated so loading needs no pydantic.

Importing pydantic and building the model classes costs ~100 ms of every `stackd config`.
The same validation runs from `schema_data.py`, a module generated from the models: `SHAPES`
(per model, its keys in field order and which of them hold nested models) and `SCHEMA` (the
models' core schema with each model turned into a typed dict: same fields, constraints, unions,
validators, and `extra="forbid"`). pydantic-core validates with it and reports the same errors
as the models. The models stay the source of truth: regenerate with
`python -m stackd.spec.schema` after changing them (a test fails while the file is stale).
"""

from __future__ import annotations

import sys
import types
import typing
from functools import cache
from typing import Any, cast

# child descriptor: None (opaque: copy as plain data) or (kind, model name) with kind one of
# "model" (a mapping for the model), "map" (mapping of models), "list" (list of models)
Child = tuple[str, str] | None

EXTENSIONS = "#extensions"
_DROP = {"metadata", "serialization", "serialization_alias", "cls", "custom_init", "root_model", "post_init", "computed_fields"}


@cache
def shapes() -> dict[str, dict[str, Child]]:
    """Model name → key → child descriptor, from the generated module."""
    from stackd.spec.schema_data import SHAPES

    return cast("dict[str, dict[str, Child]]", SHAPES)


@cache
def validator() -> Any:
    """A pydantic-core SchemaValidator equivalent to `Stack.model_validate`."""
    from pydantic_core import SchemaValidator

    from stackd.spec.schema_data import SCHEMA

    return SchemaValidator(SCHEMA)


# -- generation (imports pydantic and the models; never on the load path) ------------------


def _model_in(annotation: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _child(annotation: Any) -> tuple[str, Any] | None:
    model = _model_in(annotation)
    if model is not None:
        return ("model", model)
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


def build_shapes() -> dict[str, dict[str, Child]]:
    """Walk the models from `Stack`: every model reachable, its keys in field order."""
    from stackd.spec.models import Stack

    out: dict[str, dict[str, Child]] = {}
    todo: list[Any] = [Stack]
    while todo:
        model = todo.pop(0)
        if model.__name__ in out:
            continue
        fields: dict[str, Child] = {}
        for name, info in model.model_fields.items():
            key = info.alias or name
            if key == EXTENSIONS:
                continue
            child = _child(info.annotation)
            fields[key] = None if child is None else (child[0], child[1].__name__)
            if child is not None:
                todo.append(child[1])
        out[model.__name__] = fields
    return out


def _convert(node: Any, refs: dict[str, str]) -> Any:
    """The core schema with models as forbid-extra typed dicts, refs renamed to model names."""
    if isinstance(node, list):
        return [_convert(item, refs) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "model":
        inner = node["schema"]
        fields = {}
        for name, field in inner["fields"].items():
            schema = field["schema"]
            required = schema.get("type") != "default"
            if not required:
                schema = schema["schema"]
            entry: dict[str, Any] = {"type": "typed-dict-field", "schema": _convert(schema, refs), "required": required}
            if "validation_alias" in field:
                entry["validation_alias"] = field["validation_alias"]
            fields[name] = entry
        out: dict[str, Any] = {
            "type": "typed-dict",
            "fields": fields,
            "extra_behavior": "forbid",
            "cls_name": inner.get("model_name", ""),
            "config": {"extra_fields_behavior": "forbid", "validate_by_alias": True, "validate_by_name": True},
        }
        if "ref" in node:
            out["ref"] = refs[node["ref"]]
        return out
    if kind == "default":  # only validation matters here: a present value is checked as is
        return _convert(node["schema"], refs)
    out = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key in ("ref", "schema_ref") and isinstance(value, str):
            out[key] = refs[value]
        else:
            out[key] = _convert(value, refs)
    return out


def _collect_refs(node: Any, refs: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_refs(item, refs)
    elif isinstance(node, dict):
        if node.get("type") == "model" and "ref" in node:
            refs[node["ref"]] = node["cls"].__name__
        for value in node.values():
            _collect_refs(value, refs)


def _literal(value: Any, imports: set[str], indent: str = "") -> str:
    """Python source for plain data, one item a line where a line would grow long; functions
    by name (they must live in stackd.spec.types, which imports no pydantic)."""
    inner = indent + "    "
    if isinstance(value, dict):
        items = [f"{_literal(k, imports)}: {_literal(v, imports, inner)}" for k, v in value.items()]
        flat = "{" + ", ".join(items) + "}"
        if len(flat) + len(indent) <= 100 and "\n" not in flat:
            return flat
        return "{\n" + "".join(f"{inner}{item},\n" for item in items) + indent + "}"
    if isinstance(value, list):
        items = [_literal(v, imports, inner) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if len(flat) + len(indent) <= 100 and "\n" not in flat:
            return flat
        return "[\n" + "".join(f"{inner}{item},\n" for item in items) + indent + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v, imports) for v in value) + ")"
    if isinstance(value, types.FunctionType):
        if value.__module__ != "stackd.spec.types":
            raise ValueError(f"validator {value.__qualname__} must live in stackd.spec.types (no pydantic import)")
        imports.add(value.__name__)
        return value.__name__
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise ValueError(f"cannot write {value!r} into the generated schema")


def generate() -> str:
    """The source of `schema_data.py` for the current models."""
    from stackd.spec.models import Stack

    Stack.model_rebuild()
    core = Stack.__pydantic_core_schema__
    refs: dict[str, str] = {}
    _collect_refs(core, refs)
    schema = _convert(core, refs)
    imports: set[str] = set()
    schema_text = _literal(schema, imports)
    shapes_text = _literal(build_shapes(), imports)
    lines = [
        '"""Generated by `python -m stackd.spec.schema` from stackd.spec.models: do not edit."""',
        "",
        "# mypy: ignore-errors",
        "",
    ]
    if imports:
        lines.append(f"from stackd.spec.types import {', '.join(sorted(imports))}")
        lines.append("")
    lines += [f"SHAPES = {shapes_text}", "", f"SCHEMA = {schema_text}", ""]
    return "\n".join(lines)


def main() -> int:
    """Write schema_data.py beside this module."""
    from pathlib import Path

    target = Path(__file__).with_name("schema_data.py")
    target.write_text(generate(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
