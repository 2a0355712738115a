"""Session fixture: a throwaway registry serving the example busybox image as the docker.io mirror.

Use it from an end-to-end test module (or a conftest) by importing the fixtures:

    from tests.e2e.images_fixture import busybox_mirror, busybox_mirror_env  # noqa: F401

`busybox_mirror` (session) builds busybox exactly as examples/images/build.py does (same
function), starts its own docker-registry on a free loopback port (the image tests' helpers), pushes
library/busybox:latest and :<version>, and writes a registries.toml naming it the docker.io mirror.
`busybox_mirror_env` (function) points STACKD_REGISTRIES_CONFIG at that file. Everything (the
registry process, the temporary directory) is gone after the session. It never uses the long-lived
registry of `make images`.

`example_mirror` (session) is the same registry plus library/debian:bookworm and library/redis:7
copied from build.py's cache (STACKD_EXAMPLES_CACHE, default /var/cache/stackd-examples) when
`make images` has built them; tests that use it are skipped otherwise (the debootstrap build takes
minutes, too slow for a test run).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.engine.images.conftest import Registry, run, skopeo_copy, start_registry, stop

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = REPO_ROOT / "examples" / "images" / "build.py"


def build_module() -> ModuleType:
    """examples/images/build.py as a module (it is a script, not a package)."""
    name = "stackd_examples_images_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BUILD_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class DockerMirror:
    """A running registry that serves docker.io/library/busybox, and the config naming it."""

    registry: Registry
    registries_config: Path  # registries.toml: [registry."docker.io"] mirrors = [url]
    digest: str  # manifest digest of library/busybox:latest
    names: tuple[str, ...]  # repo:tag pushed, e.g. library/busybox:latest

    @property
    def host(self) -> str:
        return self.registry.host

    def env(self) -> dict[str, str]:
        return {"STACKD_REGISTRIES_CONFIG": str(self.registries_config)}


def layout_digest(layout: Path, tag: str) -> str:
    for m in json.loads((layout / "index.json").read_text())["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(m["digest"])
    raise LookupError(f"{layout}: no tag {tag}")


@pytest.fixture(scope="session")
def busybox_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerMirror]:
    build = build_module()
    work = tmp_path_factory.mktemp("busybox-mirror")
    try:
        layout = work / "oci"
        run("umoci", "init", "--layout", layout)
        build.build_busybox(layout, work)
        version = build.busybox_version()
        names = ("library/busybox:latest", f"library/busybox:{version}")
        storage = work / "storage"
        storage.mkdir()
        reg = start_registry(work, storage)
        try:
            for name in names:
                skopeo_copy(f"oci:{layout}:busybox", f"docker://{reg.host}/{name}")
            cfg = work / "registries.toml"
            cfg.write_text(f'[registry."docker.io"]\nmirrors = ["{reg.url}"]\n')
            yield DockerMirror(reg, cfg, layout_digest(layout, "busybox"), names)
        finally:
            stop(reg.proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def busybox_mirror_env(busybox_mirror: DockerMirror, monkeypatch: pytest.MonkeyPatch) -> DockerMirror:
    """The mirror, with STACKD_REGISTRIES_CONFIG pointing at it for this test."""
    monkeypatch.setenv("STACKD_REGISTRIES_CONFIG", str(busybox_mirror.registries_config))
    return busybox_mirror


SLOW_IMAGES = {"debian": ("library/debian:bookworm",), "redis": ("library/redis:7", "library/redis:latest")}


@pytest.fixture(scope="session")
def example_mirror(busybox_mirror: DockerMirror) -> DockerMirror:
    """busybox_mirror plus debian and redis from build.py's cache (skip when `make images` has not run)."""
    build = build_module()
    cache = build.Cache(build.cache_root())
    missing = [tag for tag in SLOW_IMAGES if cache.digest(tag) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not built in {cache.root}: run `make images` first")
    names = list(busybox_mirror.names)
    for tag, pushed in SLOW_IMAGES.items():
        for name in pushed:
            skopeo_copy(f"oci:{cache.layout}:{tag}", f"docker://{busybox_mirror.host}/{name}")
            names.append(name)
    return DockerMirror(busybox_mirror.registry, busybox_mirror.registries_config, busybox_mirror.digest, tuple(names))
