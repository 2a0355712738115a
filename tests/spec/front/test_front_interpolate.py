"""Interpolation: the forms, nested defaults, errors with positions, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackd.errors import SpecError
from stackd.spec.interpolate import Variable, interpolate_tree, list_variables, substitute
from stackd.spec.source import Node, parse_yaml, plain

ENV = {"SET": "v", "EMPTY": "", "X": "x"}

CASES = [
    ("$SET", "v"), ("${SET}", "v"), ("a${SET}b", "avb"), ("$SET-x", "v-x"), ("$$SET", "$SET"),
    ("$$", "$"), ("price $5", "price $5"), ("end$", "end$"),
    ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""), ("${UNSET-d}", "d"), ("${SET:-d}", "v"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${UNSET:-${X}}", "x"), ("${UNSET:-${ALSO:-deep}}", "deep"), ("${UNSET:-a $X b}", "a x b"),
    ("${SET:?must}", "v"), ("${EMPTY?must}", ""), ("${UNSET:-{}}", "{}"), ("${UNSET}", ""),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, ENV.get) == expected


def _interp(text: str, env: dict[str, str] | None = None) -> object:
    return plain(interpolate_tree(parse_yaml(text, "stack.yaml"), (env or ENV).get))


def _error(text: str) -> str:
    with pytest.raises(SpecError) as err:
        interpolate_tree(parse_yaml(text, "stack.yaml"), ENV.get)
    return str(err.value)


def test_required_missing_message() -> None:
    text = "services:\n  web:\n    image: ${TAG:?set TAG}\n"
    assert _error(text) == "stack.yaml:3:12: services.web.image: required variable TAG is missing a value: set TAG"


def test_required_empty_message() -> None:
    text = "services:\n  web:\n    command: [run, '${EMPTY:?}']\n"
    assert _error(text) == "stack.yaml:3:20: services.web.command[1]: required variable EMPTY is missing a value"


def test_invalid_template_message() -> None:
    text = "services:\n  web:\n    image: ${FOO BAR}\n"
    assert _error(text) == (
        "stack.yaml:3:12: services.web.image: invalid interpolation format '${FOO BAR}': write $$ for a literal $"
    )


def test_unterminated_template_message() -> None:
    text = "x-a: 1\nname: ${NAME\n"
    assert _error(text) == "stack.yaml:2:7: name: invalid interpolation format '${NAME': write $$ for a literal $"


def test_empty_braces_message() -> None:
    assert _error("labels:\n  a: '${}'\n") == "stack.yaml:2:6: labels.a: invalid interpolation format '${}': write $$ for a literal $"


def test_tree_keeps_types_and_keys() -> None:
    out = _interp("a: 1\nb: true\n$SET: $SET\nc: [$X, 2]\n")
    assert out == {"a": 1, "b": True, "$SET": "v", "c": ["x", 2]}


def test_unset_warning_once() -> None:
    warnings: list[str] = []
    interpolate_tree(parse_yaml("a: $NOPE\nb: ${NOPE}\n", "f"), ENV.get, warnings)
    assert warnings == ['The "NOPE" variable is not set. Defaulting to a blank string.']


def test_list_variables() -> None:
    tree = parse_yaml("a: ${A:-1}\nb: ${B:?no}\nc: ${C:+yes} $D\n", "f")
    assert list_variables(tree) == [
        Variable("A", False, "1", None), Variable("B", True, None, None),
        Variable("C", False, None, "yes"), Variable("D"),
    ]


@given(st.text())
def test_escaped_text_round_trips(text: str) -> None:
    assert substitute(text.replace("$", "$$"), {}.get) == text


@given(st.text(alphabet=st.sampled_from(list("${}:-+?_aZ9 x"))))
def test_random_templates_only_raise_spec_errors(text: str) -> None:
    try:
        out = interpolate_tree(Node({"k": text}), ENV.get)
    except SpecError as exc:
        assert exc.path == "k"
    else:
        assert isinstance(out["k"], str)
