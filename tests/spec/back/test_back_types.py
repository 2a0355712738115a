"""Named value types: durations, byte sizes, KEY=VALUE lists, port and volume short syntax."""

from __future__ import annotations

import pytest

from stackd.spec.types import (
    format_duration,
    key_value_mapping,
    parse_bytes,
    parse_duration,
    parse_port,
    parse_volume,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("10", 10.0), (10, 10.0), ("1.5s", 1.5),
     ("1h2m3s", 3723.0), ("100us", 0.0001), (" 2s ", 2.0), ("0", 0.0)],
)
def test_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "s", "1m30", "ten seconds", True, -1, "1d"])
def test_bad_duration(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "1m0s"), (120, "2m0s"), (10, "10s"), (0.5, "500ms"), (3600, "1h0m0s"), (90.5, "1m30.5s"), (0, "0s"),
     (3723, "1h2m3s")],
)
def test_format_duration_is_go_text(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("1g", 1024**3), ("1024", 1024), (1024, 1024), ("1.5gb", int(1.5 * 1024**3)),
     ("20M", 20 * 1024**2), ("1kb", 1024), ("10b", 10), ("2T", 2 * 1024**4)],
)
def test_bytes(text: object, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["lots", "1x", "", "-5", True, "1kk", [1]])
def test_bad_bytes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_key_value_duality() -> None:
    as_list = key_value_mapping(["A=1", "B", "C=x=y", "D="])
    as_map = key_value_mapping({"A": 1, "B": None, "C": "x=y", "D": ""})
    assert as_list == as_map == {"A": "1", "B": None, "C": "x=y", "D": ""}
    assert key_value_mapping({"T": True, "F": 1.5}) == {"T": "true", "F": "1.5"}
    with pytest.raises(ValueError):
        key_value_mapping("A=1")


def test_ports_short_syntax() -> None:
    assert parse_port(3000) == [{"mode": "ingress", "target": 3000, "protocol": "tcp"}]
    assert [p["target"] for p in parse_port("3001-3003")] == [3001, 3002, 3003]
    assert parse_port("127.0.0.1:8001:8001/udp") == [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8001, "published": "8001", "protocol": "udp"}
    ]
    assert parse_port("[::1]:80:8080")[0]["host_ip"] == "::1"
    assert parse_port("[::1]:80:8080")[0]["published"] == "80"
    assert [(p["published"], p["target"]) for p in parse_port("9090-9091:8080-8081")] == [("9090", 8080), ("9091", 8081)]
    assert parse_port("8000-8010:80") == [{"mode": "ingress", "target": 80, "published": "8000-8010", "protocol": "tcp"}]
    assert parse_port("::1:80:81")[0]["host_ip"] == "::1"
    assert parse_port(":80")[0] == {"mode": "ingress", "target": 80, "protocol": "tcp"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("80800:80", '"80800:80": host port 80800 is out of range 1-65535'),
        ("80:0", '"80:0": container port 0 is out of range 1-65535'),
        ("80:http", '"80:http": container port "http" is not a number or a range like 8000-8010'),
        ("90-91:80-82", '"90-91:80-82": host range 90-91 and container range 80-82 differ in size'),
        ("80/icmp", '"80/icmp": protocol "icmp" is not tcp, udp or sctp'),
        ("82-80", '"82-80": container port range 82-80 ends before it starts'),
    ],
)
def test_bad_ports(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_port(spec)
    assert str(info.value) == message


def test_volumes_short_syntax() -> None:
    assert parse_volume("/var/lib/x") == {"type": "volume", "target": "/var/lib/x", "volume": {}}
    assert parse_volume("data:/data:ro,nocopy") == {
        "type": "volume", "source": "data", "target": "/data", "read_only": True, "volume": {"nocopy": True}
    }
    assert parse_volume("./src:/app:rw,z,rshared") == {
        "type": "bind", "source": "./src", "target": "/app",
        "bind": {"create_host_path": True, "selinux": "z", "propagation": "rshared"},
    }
    assert parse_volume("~/c:/c")["type"] == "bind"
    assert parse_volume("/abs:/c:cached")["consistency"] == "cached"
    for bad in ("", ":/x", "a:b:c:d", "a:/b:bogus"):
        with pytest.raises(ValueError):
            parse_volume(bad)
