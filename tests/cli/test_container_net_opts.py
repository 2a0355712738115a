"""`container run` network and volume flags → ContainerConfig (parsing only, no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.cli.container_opts import build_config, parse_mount, parse_volume
from stackd.engine.container_config import NetworkAttachmentConfig
from stackd.errors import UsageError


def cfg(**o: object):  # type: ignore[no-untyped-def]
    return build_config(o, "busybox", (), {})


def test_network_flags_become_attachments_ports_and_dns() -> None:
    c = cfg(network="front", network_alias=("www",), ip="10.1.2.3", publish=("8080:80", "53/udp"),
            dns=("1.1.1.1",), dns_search=("example.org",), dns_option=("ndots:2",),
            add_host=("db:10.0.0.9",), volumes_from=("src:ro",), tmpfs=("/fast:size=1m",))
    assert c.network_mode == "" and c.networks == (NetworkAttachmentConfig("front", ("www",), "10.1.2.3"),)
    assert c.ports == ("8080:80", "53/udp") and c.dns == ("1.1.1.1",) and c.dns_search == ("example.org",)
    assert c.dns_opt == ("ndots:2",) and c.extra_hosts == ("db:10.0.0.9",) and c.volumes_from == ("src:ro",)
    assert c.tmpfs == {"/fast": "size=1m"}
    assert cfg().networks == (NetworkAttachmentConfig("bridge"),)  # Docker's default network
    for mode in ("none", "host", "container:db"):
        c = cfg(network=mode)
        assert c.network_mode == mode and c.networks == ()


@pytest.mark.parametrize("o,msg", [
    ({"network_alias": ("x",)}, "user-defined network"),
    ({"network": "host", "ip": "10.0.0.2"}, "cannot be used with --network host"),
    ({"network": "container:db", "publish": ("80",)}, "--publish cannot be used"),
])
def test_network_flag_conflicts_are_usage_errors(o: dict[str, object], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        cfg(**o)


def test_volume_and_mount_syntax(tmp_path: Path) -> None:
    anon = parse_volume("/data")
    assert anon.type == "volume" and anon.name == "" and anon.target == "/data"
    named = parse_volume("cache:/var/cache:ro,nocopy")
    assert (named.type, named.name, named.read_only, named.options) == ("volume", "cache", True, ("nocopy",))
    bind = parse_volume(f"{tmp_path}/new:/x")
    assert bind.type == "bind" and (tmp_path / "new").is_dir()  # -v creates a missing host dir
    with pytest.raises(UsageError, match="unknown mode"):
        parse_volume("v:/x:bogus")
    m = parse_mount("type=volume,source=v,target=/v,volume-nocopy,readonly")
    assert m.options == ("nocopy",) and m.read_only
    t = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1777")
    assert t.tmpfs_size == 1 << 20 and t.tmpfs_mode == 0o1777
