"""Conformance with compose-go: full-example canonical form, awesome-compose, loader testdata, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stackd.errors import SpecError
from stackd.spec.load import load
from stackd.spec.options import LoadOptions
from stackd.spec.render import ordered, render

DATA = Path(__file__).parent / "data"


def _full_example(corpus_dir: Path, home: str) -> tuple[str, object]:
    workdir = corpus_dir / "compose-go-9dee8f4" / "loader"
    env = {"HOME": home, "BAR": "this is a secret", "QUX": "qux_from_environment"}
    options = LoadOptions(files=(str(workdir / "full-example.yml"),), environ=env, working_dir=str(workdir))
    project = load(options, normalize=False, consistency=False)
    return str(workdir), project


def test_full_example_matches_compose_go_yaml(corpus_dir: Path, tmp_path: Path) -> None:
    workdir, project = _full_example(corpus_dir, str(tmp_path))
    text = (DATA / "full-example.expected.yaml").read_text()
    expected = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    expected = expected.replace("{workdir}", workdir).replace("{home}", str(tmp_path))
    got = render(project.tree)  # type: ignore[attr-defined]
    # field for field, in compose's key order
    assert yaml.safe_load(got) == yaml.safe_load(expected)
    assert list(yaml.safe_load(got)["services"]["foo"]) == list(yaml.safe_load(expected)["services"]["foo"])
    # and, as it happens, byte for byte
    assert got == expected


def test_full_example_models(corpus_dir: Path, tmp_path: Path) -> None:
    _, project = _full_example(corpus_dir, str(tmp_path))
    stack = project.stack  # type: ignore[attr-defined]
    foo = stack.services["foo"]
    assert foo.deploy.resources.limits.memory == 50 * 1024 * 1024
    assert foo.deploy.update_config.monitor == 60.0
    assert foo.stop_grace_period == 20.0
    assert foo.healthcheck.test == ["CMD-SHELL", 'echo "hello world"']
    assert [p.target for p in foo.ports][:6] == [3000, 3001, 3002, 3003, 3004, 3005]
    assert foo.ulimits["nproc"] == 65535 and foo.ulimits["nofile"].hard == 40000
    assert foo.extensions == {"x-bar": "baz", "x-foo": "bar"}
    assert stack.extensions["x-nested"] == {"bar": "baz", "foo": "bar"}
    assert stack.secrets["secret4"].environment == "BAR"
    assert foo.volumes[2].bind.create_host_path is True


def test_full_example_json_has_compose_fields(corpus_dir: Path, tmp_path: Path) -> None:
    _, project = _full_example(corpus_dir, str(tmp_path))
    data = json.loads(render(project.tree, "json"))  # type: ignore[attr-defined]
    assert data["services"]["foo"]["deploy"]["restart_policy"]["window"] == "2m0s"
    assert data["services"]["foo"]["ports"][6] == {"mode": "ingress", "target": 8000, "published": "8000", "protocol": "tcp"}


def _awesome(corpus_dir: Path) -> list[Path]:
    root = corpus_dir / "awesome-compose"
    return sorted(p for p in root.glob("*/compose.y*ml"))


def _awesome_ids() -> list[str]:
    from tests.conftest import CORPUS

    return [p.parent.name for p in sorted((CORPUS / "awesome-compose").glob("*/compose.y*ml"))]


@pytest.mark.parametrize("name", _awesome_ids())
def test_awesome_compose_loads(corpus_dir: Path, name: str) -> None:
    directory = corpus_dir / "awesome-compose" / name
    project = load(LoadOptions(environ={"HOME": "/root"}, working_dir=str(directory)))
    assert project.stack.services
    assert project.name == name.lower()
    schema_check(project_pre_canonical(directory))


def test_awesome_compose_count(corpus_dir: Path) -> None:
    assert len(_awesome(corpus_dir)) >= 39


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("compose-depends-on-cycle.yaml", "dependency cycle detected: service1 -> service2 -> service3 -> service1"),
        ("compose-depends-on-self.yaml", "dependency cycle detected: service1 -> service1"),
        # identical to the cycle file in compose-go's testdata (no Go test uses it)
        ("compose-depends-on-profile-no-cycle.yaml", "dependency cycle detected: service1 -> service2 -> service3 -> service1"),
    ],
)
def test_loader_testdata_cycles(corpus_dir: Path, file: str, message: str) -> None:
    path = corpus_dir / "compose-go" / "loader" / "testdata" / file
    with pytest.raises(SpecError) as info:
        load(LoadOptions(files=(str(path),), environ={}, working_dir=str(path.parent)))
    assert info.value.message == message
    assert info.value.position is not None and info.value.position.file.endswith(file)


# --- the corpus JSON schema accepts what stackd accepts --------------------------------------

_SCHEMA: object | None = None


def schema_check(tree: object) -> None:
    import jsonschema

    from tests.conftest import CORPUS

    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = json.loads((CORPUS / "compose-go" / "schema" / "compose-spec.json").read_text())
    jsonschema.validate(tree, _SCHEMA)  # type: ignore[arg-type]


def project_pre_canonical(directory: Path, files: tuple[str, ...] = ()) -> object:
    """The interpolated, merged tree before the canonical stage, as plain data."""
    from stackd.spec.resolve import resolve
    from stackd.spec.source import plain

    resolved = resolve(LoadOptions(files=files, environ={"HOME": "/root"}, working_dir=str(directory)))
    return plain(resolved.tree)


def test_schema_accepts_full_example(corpus_dir: Path) -> None:
    workdir = corpus_dir / "compose-go-9dee8f4" / "loader"
    schema_check(project_pre_canonical(workdir, (str(workdir / "full-example.yml"),)))


def test_ordered_keeps_extensions_last(corpus_dir: Path, tmp_path: Path) -> None:
    _, project = _full_example(corpus_dir, str(tmp_path))
    data = ordered(project.tree)  # type: ignore[attr-defined]
    assert list(data)[-3:] == ["x-bar", "x-foo", "x-nested"]


VALID_FIXTURES = [
    "services:\n  web:\n    image: nginx\n    ports: ['8080:80', '[::1]:81:81/udp', {target: 82, published: '8082'}]\n",
    "services:\n  a:\n    build: .\n    depends_on:\n      b: {condition: service_healthy, restart: true}\n"
    "    healthcheck: {test: curl -f localhost, interval: 1m30s}\n  b:\n    image: x\n    ulimits: {nofile: 1024}\n",
    "services:\n  a:\n    image: x\n    environment: [A=1, B]\n    labels: {x: 1}\n    extra_hosts: {h: 10.0.0.1}\n"
    "    volumes: [data:/d:ro, ./src:/src, /tmp]\n    secrets: [s]\n    configs: [{source: c, target: /c, mode: 0440}]\n"
    "volumes: {data: {}}\nsecrets: {s: {environment: S}}\nconfigs: {c: {content: hello}}\nx-top: 1\n",
    "services:\n  a:\n    image: x\n    deploy:\n      replicas: 2\n      resources: {limits: {cpus: '0.5', memory: 512m}}\n"
    "    mem_limit: 1g\n    stop_grace_period: 10s\n    network_mode: service:b\n  b:\n    image: y\n    profiles: [p]\n",
]


@pytest.mark.parametrize("text", VALID_FIXTURES)
def test_schema_accepts_valid_fixtures(tmp_path: Path, text: str) -> None:
    (tmp_path / "compose.yaml").write_text(text)
    load(LoadOptions(environ={"S": "x"}, profiles=("*",), working_dir=str(tmp_path)))
    schema_check(project_pre_canonical(tmp_path))
