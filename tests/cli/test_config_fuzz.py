"""`stackd config` on mutated corpus files: exit 0 or 1, never a traceback, errors with a place."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackd.cli import main
from tests.spec.back.test_back_props import CORPUS_TREES, KEYS, _paths, documents

CORPUS_TEXTS = [yaml.safe_dump(tree, sort_keys=False) for tree in CORPUS_TREES]
# an error names file:line:col (and the key path), or is about a whole file
PLACED = re.compile(r"^error: (\S+:\d+:\d+: |[^:\n]+: (no such file|is a directory|not UTF-8|cannot read)|couldn't find env file)")
EDITS = ["${", "}", "$", ":", "- ", "!reset ", "!override ", "&a ", "*a", "<<: *a", "'", '"', "\t", "\n", "{", "[", "#", "~", "../", "${X:-${Y", "${X?"]


def _run(tmp: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp / "compose.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["-f", str(path), "--project-directory", str(tmp), "config"])
    out, err = capsys.readouterr()
    assert code in (0, 1), (code, err)
    assert "Traceback" not in out + err
    if code == 1:
        assert PLACED.match(err), err


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(tmp)
    for name in ("COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "STACKD_FILE", "STACKD_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_tree_mutations(workdir: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    tree: Any = copy.deepcopy(data.draw(st.sampled_from(CORPUS_TREES)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(tree)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "rename", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(KEYS))] = parent.pop(path[-1])
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(KEYS))] = data.draw(documents)
        else:
            parent[path[-1]] = data.draw(documents)
    _run(workdir, yaml.safe_dump(tree), capsys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_text_mutations(workdir: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(CORPUS_TEXTS))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + data.draw(st.one_of(st.sampled_from(EDITS), st.text(max_size=3))) + text[at:]
        else:
            text = text[:at] + text[at + data.draw(st.integers(1, 4)):]
    _run(workdir, text, capsys)
