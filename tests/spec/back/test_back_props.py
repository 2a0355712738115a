"""Property tests: any YAML document, and any mutation of a corpus file, gives a Project or a
SpecError with a location, never another exception."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackd.errors import SpecError
from stackd.spec.load import load
from stackd.spec.options import LoadOptions
from tests.conftest import CORPUS

KEYS = [
    "services", "image", "ports", "volumes", "environment", "depends_on", "networks", "build",
    "command", "healthcheck", "test", "deploy", "resources", "limits", "memory", "cpus", "labels",
    "secrets", "configs", "source", "target", "type", "published", "condition", "env_file",
    "ulimits", "extra_hosts", "x-ext", "restart", "profiles", "web", "db", "name", "mode",
    "external", "file", "tmpfs", "size", "interval", "network_mode", "scale", "container_name",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["80:80", "80800:80", "1m30s", "512m", "./data:/data", "a=b", "service:web", "", "web",
                     "db", "on-failure:3", "CMD-SHELL", "host", "0440", "::1", "[::1]:80:80", "x:y:z:w"]),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=30,
)


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "stack.yaml").write_text(text)
        try:
            load(LoadOptions(files=("stack.yaml",), environ={"HOME": "/root"}, working_dir=tmp))
        except SpecError as exc:
            assert exc.position is not None or "file" in exc.message or "no such" in exc.message, str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["services", "networks", "volumes", "secrets", "configs", "name", "x-a"]), documents, max_size=4))
def test_random_documents(doc: dict[str, Any]) -> None:
    _check(yaml.safe_dump(doc))


@settings(max_examples=100, deadline=None)
@given(documents)
def test_random_top_level(doc: Any) -> None:
    _check(yaml.safe_dump(doc))


def _corpus_trees() -> list[Any]:
    out = []
    for path in sorted((CORPUS / "awesome-compose").glob("*/compose.y*ml"))[:15]:
        out.append(yaml.safe_load(path.read_text()))
    return out


CORPUS_TREES = _corpus_trees()


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corpus_mutations(data: st.DataObject) -> None:
    tree = copy.deepcopy(data.draw(st.sampled_from(CORPUS_TREES)))
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st.sampled_from(["replace", "delete", "rename"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "rename" and isinstance(parent, dict):
        parent[data.draw(st.sampled_from(KEYS))] = parent.pop(path[-1])
    else:
        parent[path[-1]] = data.draw(documents)
    _check(yaml.safe_dump(tree))


yaml_data = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
              st.sampled_from(["0440", "yes", "1:30", "-p", "- x", "a: b", "#c", "x #y", "a\nb\n", "a\n b", "", " s"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=6), yaml_data, max_size=4))
def test_yaml_output_reads_back(data: dict[str, Any]) -> None:
    from stackd.spec.render import to_yaml

    assert yaml.safe_load(to_yaml(data)) == (data or None)
