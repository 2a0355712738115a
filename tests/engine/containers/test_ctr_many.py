"""100 containers created and started concurrently all come up, and `container ls` is exact."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from stackd.engine.container_config import ContainerConfig
from tests.engine.containers.conftest import World

N = 100


def test_ctr_100_concurrent_containers_come_up_and_ls_is_exact(world: World) -> None:
    m = world.engine().containers

    def up(i: int) -> str:
        rec = m.create(ContainerConfig(name=f"many-{i}", image="busybox", command=("sleep", "300"),
                                       stop_signal="SIGKILL", labels={"idx": str(i)}))
        m.start(rec.id)
        return str(rec.id)

    try:
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(up, range(N)))
        assert len(set(ids)) == N
        res = world.cli("container", "ls", "--format", "json", check=True)
        rows = [json.loads(line) for line in res.stdout.decode().splitlines()]
        assert sorted(r["Names"] for r in rows) == sorted(f"many-{i}" for i in range(N))
        assert {r["State"] for r in rows} == {"running"}
        assert sorted(r["ID"] for r in rows) == sorted(i[:12] for i in ids)
        q = world.cli("container", "ls", "-q", "--filter", "label=idx=7", check=True).stdout.decode().split()
        assert q == [ids[7][:12]]
    finally:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda r: m.remove(r.id, force=True), m.store.list()))
    assert m.store.list(internal=True) == []
