"""Substitute `$VAR` / `${VAR…}` in the values of a positioned tree, as the Compose spec says.

Forms: `$V`, `${V}`, `${V:-d}`, `${V-d}`, `${V:?err}`, `${V?err}`, `${V:+alt}`, `${V+alt}`, with
nested templates in `d`/`err`/`alt`, and `$$` for a literal `$`. A `$` not followed by a name,
`{` or `$` stays as written. Keys are not interpolated, only string values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stackd.errors import SpecError
from stackd.spec.source import Node, Override, Path, Reset, Seq, error_at

Mapping = Callable[[str], str | None]
_OPS = (":-", ":?", ":+", "-", "?", "+")


class TemplateError(Exception):
    """A template is malformed or a required variable is missing (no position yet)."""


@dataclass(frozen=True, slots=True)
class Var:
    """One `$NAME` or `${NAME<op><arg>}` reference."""

    name: str
    op: str = ""
    arg: tuple[str | Var, ...] = ()
    arg_text: str = ""


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable a stack uses, for `config --variables`."""

    name: str
    required: bool = False
    default: str | None = None
    alternate: str | None = None


def _is_start(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_name(ch: str) -> bool:
    return _is_start(ch) or ("0" <= ch <= "9")


def _invalid(text: str) -> TemplateError:
    return TemplateError(f"invalid interpolation format {text!r}: write $$ for a literal $")


@lru_cache(maxsize=4096)
def parse(text: str) -> tuple[str | Var, ...]:
    """Split a template into literal text and variable references (TemplateError if malformed)."""
    parts: list[str | Var] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            buf.append(text[i:])
            break
        buf.append(text[i:j])
        nxt = text[j + 1] if j + 1 < n else ""
        if nxt == "$":
            buf.append("$")
            i = j + 2
            continue
        if nxt and _is_start(nxt):
            k = j + 2
            while k < n and _is_name(text[k]):
                k += 1
            parts.append("".join(buf))
            buf = []
            parts.append(Var(text[j + 1 : k]))
            i = k
            continue
        if nxt != "{":
            buf.append("$")
            i = j + 1
            continue
        var, i = _braced(text, j)
        parts.append("".join(buf))
        buf = []
        parts.append(var)
    parts.append("".join(buf))
    return tuple(p for p in parts if p != "")


def _braced(text: str, start: int) -> tuple[Var, int]:
    """Parse `${...}` starting at `start` (the `$`); returns the Var and the index after `}`."""
    n = len(text)
    k = start + 2
    if k >= n or not _is_start(text[k]):
        raise _invalid(text)
    while k < n and _is_name(text[k]):
        k += 1
    name = text[start + 2 : k]
    if k < n and text[k] == "}":
        return Var(name), k + 1
    op = next((o for o in _OPS if text.startswith(o, k)), "")
    if not op:
        raise _invalid(text)
    arg_start = k + len(op)
    depth = 1
    m = arg_start
    while m < n:
        ch = text[m]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                arg_text = text[arg_start:m]
                return Var(name, op, parse(arg_text), arg_text), m + 1
        m += 1
    raise _invalid(text)


def _render(parts: tuple[str | Var, ...], mapping: Mapping, unset: list[str] | None) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = mapping(part.name)
        op = part.op
        if not op:
            if value is None:
                if unset is not None:
                    unset.append(part.name)
                value = ""
            out.append(value)
        elif op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                value = _render(part.arg, mapping, unset)
            out.append(value)
        elif op in (":+", "+"):
            if value is not None and (op == "+" or value != ""):
                out.append(_render(part.arg, mapping, unset))
            else:
                out.append(value or "")
        else:
            if value is None or (op == ":?" and value == ""):
                reason = _render(part.arg, mapping, unset)
                message = f"required variable {part.name} is missing a value"
                raise TemplateError(f"{message}: {reason}" if reason else message)
            out.append(value)
    return "".join(out)


def substitute(text: str, mapping: Mapping, unset: list[str] | None = None) -> str:
    """Interpolate one string; names of unset plain variables are appended to `unset`."""
    if "$" not in text:
        return text
    return _render(parse(text), mapping, unset)


def interpolate_tree(tree: Any, mapping: Mapping, warnings: list[str] | None = None) -> Any:
    """A copy of `tree` with every string value interpolated; errors name file:line:col and path.

    Warnings about unset variables (once per variable) are appended to `warnings`.
    """
    unset: list[str] = []
    out = _walk(tree, tree, (), mapping, unset)
    if warnings is not None:
        seen = set()
        for name in unset:
            if name not in seen:
                seen.add(name)
                warnings.append(f'The "{name}" variable is not set. Defaulting to a blank string.')
    return out


def _walk(root: Any, value: Any, path: Path, mapping: Mapping, unset: list[str]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value
        try:
            return _render(parse(value), mapping, unset)
        except TemplateError as exc:
            raise error_at(root, path, str(exc)) from None
    if isinstance(value, Node):
        node = Node(pos=value.pos)
        node.key_pos = value.key_pos
        node.val_pos = value.val_pos
        for key, child in value.items():
            node[key] = _walk(root, child, (*path, key), mapping, unset)
        return node
    if isinstance(value, Seq):
        seq = Seq(pos=value.pos)
        seq.extend(_walk(root, child, (*path, i), mapping, unset) for i, child in enumerate(value))
        seq.item_pos = value.item_pos
        return seq
    if isinstance(value, Reset):
        return Reset(_walk(root, value.value, path, mapping, unset), value.pos)
    if isinstance(value, Override):
        return Override(_walk(root, value.value, path, mapping, unset), value.pos)
    return value


def _vars(parts: tuple[str | Var, ...]) -> Iterator[Var]:
    for part in parts:
        if isinstance(part, Var):
            yield part
            yield from _vars(part.arg)


def list_variables(tree: Any) -> list[Variable]:
    """The variables used in the tree's values, in order of first use (SpecError if malformed)."""
    found: dict[str, Variable] = {}
    for path, value in _strings(tree, ()):
        try:
            parts = parse(value)
        except TemplateError as exc:
            raise error_at(tree, path, str(exc)) from None
        for var in _vars(parts):
            current = found.get(var.name) or Variable(var.name)
            op = var.op
            found[var.name] = Variable(
                var.name,
                current.required or op in (":?", "?"),
                var.arg_text if op in (":-", "-") else current.default,
                var.arg_text if op in (":+", "+") else current.alternate,
            )
    return list(found.values())


def merge_variables(lists: list[list[Variable]]) -> list[Variable]:
    """Several `list_variables` results as one: first use decides the order, and a variable is
    required, or has a default or alternate, if any use says so."""
    found: dict[str, Variable] = {}
    for variables in lists:
        for var in variables:
            current = found.get(var.name)
            if current is None:
                found[var.name] = var
                continue
            found[var.name] = Variable(
                var.name,
                current.required or var.required,
                current.default if current.default is not None else var.default,
                current.alternate if current.alternate is not None else var.alternate,
            )
    return list(found.values())


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        if "$" in value:
            yield path, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _strings(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _strings(child, (*path, i))
    elif isinstance(value, (Reset, Override)):
        yield from _strings(value.value, path)


__all__ = ["SpecError", "TemplateError", "Var", "Variable", "interpolate_tree", "list_variables", "parse", "substitute"]
