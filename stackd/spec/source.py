"""Read YAML into plain trees whose containers remember where every key and value came from.

The tree is made of `Node` mappings and `Seq` sequences (dict and list subclasses) holding plain
scalars (str, int, float, bool, None). A container records the position of each child, so a later
stage can name `file:line:column` for any path. YAML is read with the 1.2 core schema that
compose-go uses (`80:80` and `yes` stay strings, `0755` is decimal), anchors and merge keys
work, duplicate keys are errors, and the `!reset` / `!override` tags are kept as wrappers for the
merge stage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from stackd.errors import Position, SpecError

Path = tuple[str | int, ...]


class Node(dict[str, Any]):
    """A mapping that knows its own position and those of its keys and values."""

    __slots__ = ("key_pos", "pos", "val_pos")

    def __init__(self, *args: Any, pos: Position | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pos = pos
        self.key_pos: dict[str, Position] = {}
        self.val_pos: dict[str, Position] = {}

    def set(self, key: str, value: Any, pos: Position | None = None, key_pos: Position | None = None) -> None:
        """Set a child along with its positions (positions default to the mapping's own)."""
        self[key] = value
        p = pos or self.pos
        if p is not None:
            self.val_pos[key] = p
        kp = key_pos or pos or self.pos
        if kp is not None:
            self.key_pos[key] = kp

    def position_of(self, key: str) -> Position | None:
        return self.val_pos.get(key) or self.key_pos.get(key) or self.pos

    def copy_node(self) -> Node:
        """A shallow copy that keeps the positions."""
        out = Node(self, pos=self.pos)
        out.key_pos = dict(self.key_pos)
        out.val_pos = dict(self.val_pos)
        return out


class Seq(list[Any]):
    """A sequence that knows its own position and those of its items."""

    __slots__ = ("item_pos", "pos")

    def __init__(self, items: Any = (), pos: Position | None = None) -> None:
        super().__init__(items)
        self.pos = pos
        self.item_pos: list[Position | None] = [pos] * len(self)

    def add(self, value: Any, pos: Position | None = None) -> None:
        self.append(value)
        self.item_pos.append(pos or self.pos)

    def position_of(self, index: int) -> Position | None:
        if 0 <= index < len(self.item_pos):
            return self.item_pos[index] or self.pos
        return self.pos


@dataclass(frozen=True, slots=True)
class Reset:
    """A value tagged `!reset`: the merge removes what earlier files set here."""

    value: Any
    pos: Position | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """A value tagged `!override`: the merge replaces what earlier files set, without merging."""

    value: Any
    pos: Position | None = None


def format_path(path: Path) -> str:
    """`("services", "web", "ports", 0)` → `services.web.ports[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def locate(tree: Any, path: Path) -> Position | None:
    """The position of the value at `path`, or of its nearest ancestor that has one."""
    found: Position | None = getattr(tree, "pos", None)
    node = tree
    for part in path:
        if isinstance(node, Node) and isinstance(part, str) and part in node:
            found = node.position_of(part) or found
            node = node[part]
        elif isinstance(node, Seq) and isinstance(part, int) and 0 <= part < len(node):
            found = node.position_of(part) or found
            node = node[part]
        else:
            break
    return found


def error_at(tree: Any, path: Path, message: str) -> SpecError:
    """A SpecError naming the position of `path` in `tree` and the path itself."""
    return SpecError(message, position=locate(tree, path), path=format_path(path))


def walk(tree: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) pair in the tree, parents before children."""
    yield path, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from walk(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from walk(value, (*path, index))


# --- YAML 1.2 core schema resolver (what compose-go's yaml.v3 does) ----------------------------

class _Resolver(yaml.resolver.BaseResolver):
    pass


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _mark(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Constructor(yaml.constructor.SafeConstructor):
    file = "<stdin>"

    def construct_document(self, node: yaml.Node) -> Any:
        return self._build(node)

    def _build(self, node: yaml.Node) -> Any:
        pos = _mark(self.file, node)
        tag = node.tag
        if tag in ("!reset", "!override"):
            inner = self._untagged(node)
            return Reset(inner, pos) if tag == "!reset" else Override(inner, pos)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, pos)
        if isinstance(node, yaml.SequenceNode):
            seq = Seq(pos=pos)
            for item in node.value:
                seq.add(self._build(item), _mark(self.file, item))
            return seq
        if tag == "tag:yaml.org,2002:int":
            return _to_int(node.value, pos)
        if tag == "tag:yaml.org,2002:float":
            return _to_float(node.value)
        if tag == "tag:yaml.org,2002:bool":
            return node.value.lower() == "true"
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:binary", "tag:yaml.org,2002:timestamp"):
            return str(node.value)
        if tag.startswith("!"):
            raise SpecError(f"unknown YAML tag {tag} (stackd knows !reset and !override)", position=pos)
        return self.construct_object(node, deep=True)

    def _untagged(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            plain_style = node.style in (None, "")
            tag = _Resolver.resolve(self, yaml.ScalarNode, node.value, (True, False)) if plain_style else "tag:yaml.org,2002:str"  # type: ignore[arg-type,no-untyped-call]
            node = yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark, node.style)
        elif isinstance(node, yaml.MappingNode):
            node = yaml.MappingNode("tag:yaml.org,2002:map", node.value, node.start_mark, node.end_mark, node.flow_style)
        elif isinstance(node, yaml.SequenceNode):
            node = yaml.SequenceNode("tag:yaml.org,2002:seq", node.value, node.start_mark, node.end_mark, node.flow_style)
        return self._build(node)

    def _mapping(self, node: yaml.MappingNode, pos: Position) -> Node:
        self.flatten_mapping(node)
        out = Node(pos=pos)
        for key_node, value_node in node.value:
            kpos = _mark(self.file, key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain value", position=kpos)
            key = self._build(key_node)
            key = "" if key is None else key
            if isinstance(key, bool):
                key = "true" if key else "false"
            key = str(key)
            if key in out:
                raise SpecError(f"mapping key {key!r} already defined at line {out.key_pos[key].line}", position=kpos)
            out.set(key, self._build(value_node), _mark(self.file, value_node), kpos)
        return out

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Resolve `<<` merge keys; keys merged in may be overridden by explicit ones."""
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise SpecError("a merge key (<<) takes a mapping or a list of mappings", position=_mark(self.file, source))
                    self.flatten_mapping(source)
                    merged.extend(source.value)
            else:
                explicit.append((key_node, value_node))
        if merged:
            explicit_keys = {k.value for k, _ in explicit if isinstance(k, yaml.ScalarNode)}
            seen: set[str] = set()
            kept: list[tuple[yaml.Node, yaml.Node]] = []
            for key_node, value_node in merged:
                k = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if k in explicit_keys or k in seen:
                    continue
                if k is not None:
                    seen.add(k)
                kept.append((key_node, value_node))
            node.value = kept + explicit


def _to_int(text: str, pos: Position) -> int | str:
    """Integers as compose-go's yaml.v3 reads them (Go's base-0 rules): `0o17`, `0x1f`, `0b11`,
    and a leading zero means octal (`0440` is 288, the file mode users mean)."""
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if digits[:2] in ("0o", "0x", "0b"):
        return sign * int(digits[2:], {"0o": 8, "0x": 16, "0b": 2}[digits[:2]])
    if len(digits) > 1 and digits[0] == "0":
        if all(c in "01234567" for c in digits):
            return sign * int(digits, 8)
        return text  # `0999`: not octal; kept as written so errors can quote it
    return sign * int(digits, 10)


def _to_float(text: str) -> float:
    low = text.lower()
    if low.endswith("inf"):
        return float("-inf") if low.startswith("-") else float("inf")
    if low == ".nan":
        return float("nan")
    return float(text)


try:
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    class _Parser(  # type: ignore[no-redef]
        yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)


class _Loader(_Parser, _Constructor, _Resolver):
    def __init__(self, stream: str, file: str) -> None:
        _Parser.__init__(self, stream)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self.file = file


def parse_yaml(text: str, file: str) -> Any:
    """Parse one YAML document into a positioned tree (None for an empty document)."""
    loader = _Loader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"invalid YAML: {problem}", position=pos) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", position=Position(file, 1, 1)) from None
    except RecursionError:
        raise SpecError("invalid YAML: nesting is too deep", position=Position(file, 1, 1)) from None
    finally:
        loader.dispose()


def read_file(path: str, display: str | None = None) -> Any:
    """Read and parse a YAML file; `-` reads standard input. Errors name the file."""
    if path == "-":
        import sys

        return parse_yaml(sys.stdin.read(), display or "<stdin>")
    name = display or path
    text = read_text(path, name, missing=f"{name}: no such file", directory=f"{name}: is a directory, not a stack file")
    return parse_yaml(text, name)


def read_text(path: str, name: str, *, missing: str, directory: str, encoding: str = "utf-8-sig") -> str:
    """A file's text; every way reading it fails becomes one SpecError naming the file."""
    try:
        with open(path, encoding=encoding) as fh:
            return fh.read()
    except FileNotFoundError:
        raise SpecError(missing) from None
    except IsADirectoryError:
        raise SpecError(directory) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{name}: cannot read: {exc.strerror}") from None


def plain(tree: Any) -> Any:
    """The tree as plain dicts and lists (positions and tags dropped): for output and tests."""
    if isinstance(tree, (Reset, Override)):
        return plain(tree.value)
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [plain(v) for v in tree]
    return tree
