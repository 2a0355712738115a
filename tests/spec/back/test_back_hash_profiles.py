"""Config hashes (pinned, stable, sensitive to what matters) and profile selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.errors import SpecError
from stackd.spec.hash import config_hash, hashed_view
from stackd.spec.load import Project, load
from stackd.spec.options import LoadOptions

STACK = """\
name: demo
services:
  web:
    image: nginx:1.27
    ports: ["8080:80"]
    environment:
      B: "2"
      A: "1"
    env_file: app.env
    configs: [site]
    secrets: [token]
    depends_on: [db]
    deploy:
      replicas: 2
  db:
    image: postgres:16
    profiles: [data]
  debug:
    image: busybox
    profiles: [debug]
configs:
  site:
    file: ./site.conf
secrets:
  token:
    environment: TOKEN
"""


def _load(tmp_path: Path, text: str = STACK, env: dict[str, str] | None = None, **kw: object) -> Project:
    (tmp_path / "stack.yaml").write_text(text)
    (tmp_path / "app.env").exists() or (tmp_path / "app.env").write_text("LEVEL=info\n")
    (tmp_path / "site.conf").exists() or (tmp_path / "site.conf").write_text("listen 80;\n")
    environ = {"TOKEN": "s3cret", "COMPOSE_PROFILES": "data", **(env or {})}
    return load(LoadOptions(files=("stack.yaml",), environ=environ, working_dir=str(tmp_path)), **kw)  # type: ignore[arg-type]


def test_hash_is_pinned(tmp_path: Path) -> None:
    project = _load(tmp_path)
    # pinned: a change here recreates every user's containers; change only on purpose
    assert config_hash(project.tree, "web", environment=project.environment) == (
        "cff82a9fccbca1440d883d80e6ed0e7e5874bea13418feb545962a078df4bc9f"
    )
    assert config_hash(project.tree, "db") == "a4c7e6ce063bff2a7e19b46c20fa8b2d74835e35370f7cf599faffeaebe331f4"


def test_hash_ignores_order_and_non_container_keys(tmp_path: Path) -> None:
    first = _load(tmp_path)
    base = config_hash(first.tree, "web", environment=first.environment)
    reordered = STACK.replace('      B: "2"\n      A: "1"\n', '      A: "1"\n      B: "2"\n')
    other = _load(tmp_path, reordered.replace("replicas: 2", "replicas: 5").replace("depends_on: [db]", "depends_on: []"))
    assert config_hash(other.tree, "web", environment=other.environment) == base
    view = hashed_view(other.tree, "web")
    assert "depends_on" not in view and "deploy" not in view and "env_file" not in view


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "site.conf").write_text("listen 81;\n"),
        lambda p: (p / "app.env").write_text("LEVEL=debug\n"),
    ],
    ids=["config-file-content", "env-file-content"],
)
def test_hash_follows_file_contents(tmp_path: Path, change: object) -> None:
    before = _load(tmp_path)
    h1 = config_hash(before.tree, "web", environment=before.environment)
    change(tmp_path)  # type: ignore[operator]
    after = _load(tmp_path)
    assert config_hash(after.tree, "web", environment=after.environment) != h1


def test_hash_follows_secret_environment_and_image(tmp_path: Path) -> None:
    a = _load(tmp_path)
    b = _load(tmp_path, env={"TOKEN": "other"})
    assert config_hash(a.tree, "web", environment=a.environment) != config_hash(b.tree, "web", environment=b.environment)
    assert config_hash(a.tree, "db") != config_hash(a.tree, "db", extra={"image_digest": "sha256:00"})
    c = _load(tmp_path, STACK.replace("nginx:1.27", "nginx:1.28"))
    assert config_hash(a.tree, "web", environment=a.environment) != config_hash(c.tree, "web", environment=c.environment)


def test_profiles_from_environment(tmp_path: Path) -> None:
    project = _load(tmp_path)
    assert sorted(project.stack.services) == ["db", "web"]
    assert project.disabled == ("debug",)
    assert project.profiles == ("data", "debug")


def test_profile_star_and_option(tmp_path: Path) -> None:
    (tmp_path / "stack.yaml").write_text(STACK)
    _load(tmp_path)
    every = load(LoadOptions(files=("stack.yaml",), profiles=("*",), environ={"TOKEN": "x"}, working_dir=str(tmp_path)))
    assert sorted(every.stack.services) == ["db", "debug", "web"]
    only = load(LoadOptions(files=("stack.yaml",), profiles=("debug",), environ={"COMPOSE_PROFILES": "data"}, working_dir=str(tmp_path)), services=("db",))
    assert sorted(only.stack.services) == ["db", "debug", "web"]


def test_dependency_on_disabled_service(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, env={"COMPOSE_PROFILES": ""})
    assert str(info.value) == (
        'stack.yaml:12:18: services.web.depends_on.db: depends on service "db", which is disabled (enable its profile: --profile data)'
    )


def test_optional_dependency_on_disabled_service_is_dropped(tmp_path: Path) -> None:
    text = STACK.replace("depends_on: [db]", "depends_on:\n      db:\n        required: false")
    project = _load(tmp_path, text, env={"COMPOSE_PROFILES": ""})
    assert "db" not in project.stack.services
    assert project.stack.services["web"].depends_on == {}
