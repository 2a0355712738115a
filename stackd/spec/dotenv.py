"""Parse `.env` files with compose-go's dotenv rules (quotes, escapes, `export`, interpolation).

Rules: blank lines and `#` comments are skipped; `export KEY=...` and `KEY: value` are accepted;
a single-quoted value is literal (only `\\'` is unescaped); a double-quoted value may span lines
and expands `\\n \\t \\r \\a \\b \\f \\v \\\\ \\" \\$` and `\\0NNN` octal escapes, then variables; an
unquoted value runs to the end of the line, loses a trailing ` #comment` and trailing blanks, then
expands variables; `KEY` alone takes the lookup's value or is left out. Variables expand against
the lookup first, then the values defined so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from stackd.errors import Position, SpecError
from stackd.spec.source import read_text

Lookup = Callable[[str], str | None]

_SPACE = "\t\v\f\r \x85\xa0"
_EXPORT = re.compile(r"export[ \t\v\f\r\x85\xa0]+")
_ESCAPE = re.compile(r'\\(?:[abcfnrtv$"\\]|0\d{0,3})')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


def _unescape(match: re.Match[str]) -> str:
    text = match.group(0)
    char = text[1]
    if char == "$":
        return "$$"
    if char == "0":
        digits = text[2:]
        if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) < 256:
            return chr(int(digits, 8))
        return text
    return _SIMPLE[char]


class _Parser:
    def __init__(self, text: str, file: str, out: dict[str, str], lookup: Lookup) -> None:
        self.text = text
        self.file = file
        self.out = out
        self.lookup = lookup

    def pos(self, index: int) -> Position:
        line = self.text.count("\n", 0, index) + 1
        column = index - (self.text.rfind("\n", 0, index) + 1) + 1
        return Position(self.file, line, column)

    def fail(self, index: int, message: str) -> SpecError:
        return SpecError(message, position=self.pos(index))

    def expand(self, value: str, index: int) -> str:
        from stackd.spec.interpolate import TemplateError, substitute

        def mapping(name: str) -> str | None:
            found = self.lookup(name)
            return found if found is not None else self.out.get(name)

        try:
            return substitute(value, mapping)
        except TemplateError as exc:
            raise self.fail(index, str(exc)) from None

    def run(self) -> None:
        text, i, n = self.text, 0, len(self.text)
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                return
            if text[i] == "#":
                nl = text.find("\n", i)
                if nl < 0:
                    return
                i = nl
                continue
            i = self.statement(i)

    def statement(self, start: int) -> int:
        text, n = self.text, len(self.text)
        i = start
        m = _EXPORT.match(text, i)
        if m:
            i = m.end()
        key_start = i
        end = -1
        terminator = ""
        j = i
        while j < n:
            ch = text[j]
            if ch in _SPACE or ch in "_.-[]" or ch.isalnum():
                j += 1
                continue
            if ch in "=:\n":
                end, terminator = j, ch
                break
            line = text[key_start:].split("\n", 1)[0]
            raise self.fail(j, f"unexpected character {ch!r} in variable name {line!r}")
        if end < 0:  # a key alone on the last line
            end, terminator = n, "\n"
        key = text[key_start:end].rstrip()
        if any(c in _SPACE for c in key):
            raise self.fail(key_start, f"variable name {key!r} cannot contain a space")
        if terminator == "\n":
            value = self.lookup(key)
            if value is None:
                value = self.out.get(key)
            if value is not None:
                self.out[key] = value
            return end
        i = end + 1
        while i < n and text[i] in _SPACE:
            i += 1
        value, i = self.value(i)
        self.out[key] = value
        return i

    def value(self, start: int) -> tuple[str, int]:
        text, n = self.text, len(self.text)
        if start >= n or text[start] not in "'\"":
            nl = text.find("\n", start)
            nl = n if nl < 0 else nl
            raw = text[start:nl].split(" #", 1)[0].rstrip()
            return self.expand(raw, start), nl
        quote = text[start]
        chars: list[str] = []
        escaped = False
        i = start + 1
        while i < n:
            ch = text[i]
            if ch != quote:
                if not escaped and ch == "\\":
                    escaped = True
                elif escaped:
                    escaped = False
                    chars.append("\\" + ch)
                else:
                    chars.append(ch)
                i += 1
                continue
            if escaped:
                escaped = False
                chars.append(ch)
                i += 1
                continue
            value = "".join(chars)
            if quote == '"':
                value = self.expand(_ESCAPE.sub(_unescape, value), start)
            return value, i + 1
        line = text[start:].split("\n", 1)[0]
        raise self.fail(start, f"unterminated quoted value {line}")


def parse_dotenv(
    text: str, file: str = ".env", lookup: Lookup | None = None, into: dict[str, str] | None = None
) -> dict[str, str]:
    """The variables a `.env` text defines (added to `into` when given, which is returned)."""
    out = {} if into is None else into
    if text.startswith("\ufeff"):
        text = text[1:]
    _Parser(text, file, out, lookup or (lambda _name: None)).run()
    return out


def read_dotenv(path: str, lookup: Lookup | None = None, into: dict[str, str] | None = None) -> dict[str, str]:
    """Read and parse one env file; a missing or unreadable file is a SpecError naming it."""
    text = read_text(path, path, missing=f"couldn't find env file: {path}",
                     directory=f"{path} is a directory, not an env file", encoding="utf-8")
    return parse_dotenv(text, path, lookup, into)
