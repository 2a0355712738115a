"""Render a canonical project as `docker compose config` does: YAML (default) or JSON.

Key order follows the models' field order (compose-go's struct order); free-form mappings
(labels, environment, services…) are sorted; `x-` extensions come last in their mapping;
opt-out defaults compose omits (`env_file[].required: true`, `bind.create_host_path: true`)
are left out.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from stackd.spec.keys import Child, shape

_OPT_OUT = {"required", "create_host_path"}


def ordered(tree: Any) -> dict[str, Any]:
    """The canonical tree as plain, ordered data ready to dump."""
    out = _model(tree, "Stack")
    assert isinstance(out, dict)
    out.pop("version", None)  # obsolete; compose drops it from its output too
    return out


def _model(value: Any, model: str) -> Any:
    if not isinstance(value, dict):
        return _free(value)
    known = shape(model)
    out: dict[str, Any] = {}
    for key, child in known.items():
        if key not in value:
            continue
        item = value[key]
        if key in _OPT_OUT and item is True and model in ("EnvFile", "BindOptions"):
            continue
        out[key] = _child(item, child)
    for key in sorted(k for k in value if k not in known):
        out[key] = _free(value[key])
    return out


def _child(item: Any, child: Child) -> Any:
    if child is None:
        return _free(item)
    kind, model = child
    if kind == "model":
        return _model(item, model)
    if kind == "map" and isinstance(item, dict):
        return {k: _model(item[k], model) for k in sorted(item)}
    if kind == "list" and isinstance(item, list):
        return [_model(v, model) for v in item]
    return _free(item)


def _free(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _free(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_free(v) for v in value]
    return value


_PLAIN_SCALAR = re.compile(
    r"^(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE|y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"
    r"|[-+]?(?:0|[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|0[xob][0-9a-fA-F_]+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|<<|=)$"
)
_INDICATORS = set("?:,[]{}#&*!|>'\"%@`")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text:
            text = text.replace("e", ".0e", 1)
        return text
    return _text(str(value))


@lru_cache(maxsize=8192)
def _text(text: str) -> str:
    """A string plain when YAML reads it back as the same string, else double-quoted."""
    if (
        text
        and text == text.strip()
        and text[0] not in _INDICATORS
        and not (text[0] == "-" and (len(text) == 1 or text[1] == " "))
        and ": " not in text
        and " #" not in text
        and not text.endswith(":")
        and text.isprintable()
        and not _PLAIN_SCALAR.match(text)
    ):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    """A YAML double-quoted string; non-printable characters escaped (YAML has `\\U`)."""
    out = json.dumps(text, ensure_ascii=False)
    if out[1:-1].isprintable():
        return out
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in out
    )


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_text(str(key))}:"
            _emit_child(head, item, indent, out)
    else:
        for item in value:
            _emit_child(f"{pad}  -", item, indent + 2, out, in_list=True)


def _emit_child(head: str, item: Any, indent: int, out: list[str], in_list: bool = False) -> None:
    if isinstance(item, dict) and item:
        if in_list:
            first = len(out)
            _emit(item, indent + 2, out)
            out[first] = head + " " + out[first].lstrip(" ")
        else:
            out.append(head)
            _emit(item, indent + 2, out)
    elif isinstance(item, list) and item:
        out.append(head)
        _emit(item, indent, out)
    elif isinstance(item, dict):
        out.append(head + " {}")
    elif isinstance(item, list):
        out.append(head + " []")
    elif isinstance(item, str) and _block_ok(item):
        block = "|" if item.endswith("\n") else "|-"
        out.append(f"{head} {block}")
        pad = " " * (indent + 2)
        body = item[:-1] if item.endswith("\n") else item
        out.extend(pad + line if line else "" for line in body.split("\n"))
    else:
        out.append(f"{head} {_scalar(item)}")


def _block_ok(text: str) -> bool:
    """Whether a multi-line string can be a literal block (`|`) and read back unchanged."""
    lines = text.split("\n")
    return (
        len(lines) > 1
        and bool(lines[0])
        and lines[0][0] not in " \t"
        and all(line.isprintable() and line == line.rstrip(" \t") for line in lines)
        and not text.endswith("\n\n")
    )


def to_yaml(data: Any) -> str:
    """Block-style YAML as compose prints it (sequences indented under their key)."""
    out: list[str] = []
    _emit(data, 0, out)
    return "\n".join(out) + "\n"


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(tree: Any, fmt: str = "yaml") -> str:
    """The whole project in `fmt` (`yaml` or `json`)."""
    data = ordered(tree)
    return to_json(data) if fmt == "json" else to_yaml(data)
