"""The positioned YAML reader: 1.2 core schema, anchors, merge keys, tags, positions, errors."""

from __future__ import annotations

import pytest

from stackd.errors import SpecError
from stackd.spec.source import Override, Reset, locate, parse_yaml, plain


def test_yaml_12_core_schema_keeps_compose_strings() -> None:
    tree = parse_yaml("a: 80:80\nb: yes\nc: 0755\nd: on\ne: 1.5\nf: ~\ng: true\nh: 0o17\n", "s.yaml")
    assert plain(tree) == {"a": "80:80", "b": "yes", "c": 0o755, "d": "on", "e": 1.5, "f": None, "g": True, "h": 15}


def test_positions_are_one_based_line_and_column() -> None:
    tree = parse_yaml("services:\n  web:\n    ports:\n      - '80:80'\n", "stack.yaml")
    pos = locate(tree, ("services", "web", "ports", 0))
    assert (pos.file, pos.line, pos.column) == ("stack.yaml", 4, 9)
    assert str(locate(tree, ("services", "web", "missing"))) == "stack.yaml:3:5"


def test_anchors_and_merge_keys_explicit_keys_win() -> None:
    tree = parse_yaml("x: &b {image: a, user: u}\ny:\n  <<: *b\n  image: b\n", "s.yaml")
    assert plain(tree["y"]) == {"image": "b", "user": "u"}


def test_reset_and_override_tags_are_kept_for_the_merge() -> None:
    tree = parse_yaml("a: !reset []\nb: !override {x: 1}\nc: !reset null\n", "s.yaml")
    assert isinstance(tree["a"], Reset) and tree["a"].value == []
    assert isinstance(tree["b"], Override) and plain(tree["b"].value) == {"x": 1}
    assert isinstance(tree["c"], Reset) and tree["c"].value is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "s.yaml:2:1: mapping key 'a' already defined at line 1"),
        ("a: [1\n", "s.yaml:2:1: invalid YAML: did not find expected ',' or ']'"),
        ("a: !foo 1\n", "s.yaml:1:4: unknown YAML tag !foo (stackd knows !reset and !override)"),
        ("a:\n  <<: 1\n", "s.yaml:2:7: a merge key (<<) takes a mapping or a list of mappings"),
    ],
)
def test_bad_yaml_names_file_line_and_column(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_yaml(text, "s.yaml")
    assert str(err.value) == message
