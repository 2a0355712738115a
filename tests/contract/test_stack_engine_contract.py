"""The StackEngine contract: what `stackd.apply` relies on, run against every implementation.

The fake and the real engine's adapter (stackd.stack.engine_adapter, on throwaway roots with
the busybox mirror; root only). The real one runs the same busybox commands for real.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import trio

from stackd.apply_engine import StackEngine, UnhealthyError
from stackd.apply_fake import FakeEngine
from stackd.errors import ConflictError, ContainerStateError, NotFoundError
from stackd.planner.desired import ContainerSpec, NetworkSpec, VolumeSpec
from tests.e2e.images_fixture import busybox_mirror  # noqa: F401  (session fixture of the real engine)

PROJECT = "contract"
LABELS = {"io.stackd.stack": PROJECT}


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.root)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[StackEngine]:
    if request.param == "fake":
        yield FakeEngine()
        return
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("the real engine needs root and runc")
    from tests.stack.realkit import real_engine

    mirror = request.getfixturevalue("busybox_mirror")
    with real_engine(mirror.registries_config, tmp_path) as real:
        yield real


def spec(name: str, command: list[str], healthcheck: dict | None = None, **extra) -> ContainerSpec:
    config = {"image": "busybox", "command": command, **({"healthcheck": healthcheck} if healthcheck else {})}
    labels = {**LABELS, "io.stackd.service": name, "io.stackd.number": "1", "io.stackd.oneoff": "False"}
    return ContainerSpec(f"{PROJECT}-{name}-1", name, 1, "busybox", labels, config, **extra)


async def test_pull_returns_a_digest(engine: StackEngine, autojump_clock) -> None:
    digest = await engine.pull("busybox")
    assert digest.startswith("sha256:")
    assert await engine.pull("busybox") == digest


async def test_networks_and_volumes(engine: StackEngine, autojump_clock) -> None:
    await engine.create_network(NetworkSpec("default", "contract_default", {**LABELS, "io.stackd.network": "default"}))
    await engine.create_volume(VolumeSpec("data", "contract_data", {**LABELS, "io.stackd.volume": "data"}))
    observed = await engine.observe(PROJECT)
    assert observed.network("contract_default") is not None
    assert observed.network("contract_default").labels["io.stackd.network"] == "default"
    assert observed.volume("contract_data") is not None
    with pytest.raises(ConflictError):
        await engine.create_network(NetworkSpec("default", "contract_default", LABELS))
    with pytest.raises(ConflictError):
        await engine.create_volume(VolumeSpec("data", "contract_data", LABELS))
    assert (await engine.observe("someone-else")).networks == ()


async def test_container_lifecycle(engine: StackEngine, autojump_clock) -> None:
    await engine.pull("busybox")
    cid = await engine.create_container(spec("app", ["sleep", "inf"]))
    (c,) = (await engine.observe(PROJECT)).containers
    assert (c.id, c.name, c.state, c.labels["io.stackd.service"]) == (cid, "contract-app-1", "created", "app")
    with pytest.raises(ConflictError):
        await engine.create_container(spec("app", ["sleep", "inf"]))
    await engine.start(cid)
    assert (await engine.observe(PROJECT)).containers[0].state == "running"
    await engine.start(cid)  # already running: no-op
    with pytest.raises(ContainerStateError):
        await engine.remove(cid)
    await engine.rename(cid, "contract-app-new")
    assert (await engine.observe(PROJECT)).containers[0].name == "contract-app-new"
    await engine.stop(cid, timeout=1)
    (c,) = (await engine.observe(PROJECT)).containers
    assert c.state == "exited"
    assert c.stopped
    await engine.remove(cid)
    assert (await engine.observe(PROJECT)).containers == ()
    with pytest.raises(NotFoundError):
        await engine.start(cid)


async def test_wait_exited_returns_the_exit_code(engine: StackEngine, autojump_clock) -> None:
    await engine.pull("busybox")
    ok = await engine.create_container(spec("ok", ["sh", "-c", "sleep 1; exit 0"]))
    bad = await engine.create_container(spec("bad", ["sh", "-c", "exit 3"]))
    await engine.start(ok)
    await engine.start(bad)
    assert await engine.wait_exited(ok) == 0
    assert await engine.wait_exited(bad) == 3
    states = {c.name: (c.state, c.exit_code, c.stopped) for c in (await engine.observe(PROJECT)).containers}
    assert states == {"contract-ok-1": ("exited", 0, False), "contract-bad-1": ("exited", 3, False)}


async def test_wait_exited_returns_when_stopped(engine: StackEngine, autojump_clock) -> None:
    await engine.pull("busybox")
    cid = await engine.create_container(spec("srv", ["sleep", "inf"]))
    await engine.start(cid)
    async with trio.open_nursery() as nursery:
        codes = []

        async def waiter() -> None:
            codes.append(await engine.wait_exited(cid))

        nursery.start_soon(waiter)
        await trio.sleep(1)
        await engine.stop(cid, timeout=1)
    assert codes and codes[0] != 0


async def test_wait_healthy(engine: StackEngine, autojump_clock) -> None:
    await engine.pull("busybox")
    good = await engine.create_container(spec("good", ["sleep", "inf"], {"test": ["CMD", "true"], "interval": "1s"}))
    bad = await engine.create_container(spec("bad", ["sleep", "inf"], {
        "test": ["CMD-SHELL", "echo not ready; exit 1"], "interval": "1s", "retries": 2}))
    plain = await engine.create_container(spec("plain", ["sleep", "inf"]))
    for cid in (good, bad, plain):
        await engine.start(cid)
    await engine.wait_healthy(good, timeout=30)
    health = {c.name: c.health for c in (await engine.observe(PROJECT)).containers}
    assert health["contract-good-1"] == "healthy"
    assert health["contract-plain-1"] is None
    with pytest.raises(UnhealthyError) as info:
        await engine.wait_healthy(bad, timeout=30)
    assert info.value.output == "not ready"
    assert "not ready" in str(info.value)
    with pytest.raises(UnhealthyError):
        await engine.wait_healthy(plain, timeout=5)


async def test_wait_healthy_times_out(engine: StackEngine, autojump_clock) -> None:
    await engine.pull("busybox")
    slow = await engine.create_container(spec("slow", ["sleep", "inf"], {"test": ["CMD", "true"], "interval": "60s"}))
    await engine.start(slow)
    with pytest.raises(UnhealthyError, match="not healthy after 5s"):
        await engine.wait_healthy(slow, timeout=5)


async def test_create_needs_its_image_network_and_volume(engine: StackEngine, autojump_clock) -> None:
    with pytest.raises(NotFoundError):
        await engine.create_container(spec("x", ["true"]))
    await engine.pull("busybox")
    with pytest.raises(NotFoundError):
        await engine.create_container(spec("y", ["true"], networks={"default": "contract_nonet"}))
    with pytest.raises(NotFoundError):
        await engine.create_container(spec("z", ["true"], volumes={"data": "contract_novol"}))
