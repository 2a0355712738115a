"""Unit tests of the shim's pure parts: protocol codec and framing, restart policy, healthcheck, log writer."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackd.engine.shim import protocol as P
from stackd.engine.shim.health import HEALTHY, STARTING, UNHEALTHY, HealthConfig, HealthMonitor
from stackd.engine.shim.logs import LogWriter, follow_logs, format_time_ns, parse_time_ns, read_logs
from stackd.engine.shim.restart import PolicyError, RestartManager, RestartPolicy

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_shim_json_roundtrip_matches_stdlib(value: object) -> None:
    text = P.dumps(value)
    assert json.loads(text) == value
    assert P.loads(text) == value
    assert P.loads(json.dumps(value)) == value


def test_shim_json_rejects_garbage() -> None:
    for bad in ("", "{", '{"a":1} x', "[1,]", "nul"):
        with pytest.raises(ValueError):
            P.loads(bad)
    with pytest.raises(TypeError):
        P.dumps({1: 2})
    with pytest.raises(ValueError):
        P.dumps(float("nan"))


def test_shim_frames_decode_incrementally() -> None:
    blob = (
        P.request(1, "kill", signal=9)
        + P.data(3, P.STDOUT, b"x" * 70000)
        + P.eof(3, P.STDIN)
        + P.reply(1, {"a": [1]})
    )
    dec = P.Decoder()
    frames = []
    for i in range(0, len(blob), 7):
        frames += dec.feed(blob[i : i + 7])
    assert dec.pending == 0
    kinds = [f.kind for f in frames]
    assert kinds == [P.MSG, P.DATA, P.DATA, P.EOF, P.MSG]  # 70000 bytes split in 64 KiB chunks
    assert frames[0].msg == {"id": 1, "op": "kill", "signal": 9}
    assert b"".join(f.payload for f in frames[1:3]) == b"x" * 70000
    assert (frames[3].channel, frames[3].stream) == (3, P.STDIN)
    assert frames[4].msg == {"id": 1, "ok": True, "result": {"a": [1]}}


def test_shim_frames_reject_bad_input() -> None:
    with pytest.raises(P.ProtocolError):
        P.Decoder().feed(P.HEADER.pack(9, 0, 0, 0))
    with pytest.raises(P.ProtocolError):
        P.Decoder().feed(P.HEADER.pack(P.MSG, 0, 0, 2) + b"[]")
    with pytest.raises(P.ProtocolError):
        P.Decoder().feed(P.HEADER.pack(P.MSG, 0, 0, P.MAX_PAYLOAD + 1))


# --- restart policy ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_shim_restart_policy_parse() -> None:
    assert RestartPolicy.parse("on-failure:3") == RestartPolicy("on-failure", 3)
    assert str(RestartPolicy.parse("always")) == "always"
    assert RestartPolicy.parse("") == RestartPolicy("no")
    for bad in ("sometimes", "on-failure:x", "always:3", "on-failure:-1"):
        with pytest.raises(PolicyError):
            RestartPolicy.parse(bad)


def test_shim_restart_backoff_doubles_and_resets() -> None:
    clock = Clock()
    rm = RestartManager(RestartPolicy.parse("always"), clock)
    delays = []
    for _ in range(5):
        rm.started()
        clock.t += 1
        delays.append(rm.exited(0))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    rm.started()
    clock.t += 10  # ran 10 s: back to 100 ms
    assert rm.exited(1) == 0.1
    assert rm.restart_count == 6
    for _ in range(20):
        rm.started()
        d = rm.exited(1)
    assert d == 60.0


def test_shim_restart_policies() -> None:
    clock = Clock()
    no = RestartManager(RestartPolicy.parse("no"), clock)
    no.started()
    assert no.exited(1) is None
    onf = RestartManager(RestartPolicy.parse("on-failure:2"), clock)
    onf.started()
    assert onf.exited(0) is None
    assert [onf.exited(1) is not None for _ in range(3)] == [True, True, False]
    stopped = RestartManager(RestartPolicy.parse("unless-stopped"), clock)
    stopped.started()
    stopped.stopped_by_user()
    assert stopped.exited(137) is None
    stopped.reset_user_stop()
    stopped.started()
    assert stopped.exited(137) == 0.1


# --- healthcheck ------------------------------------------------------------------------------


def test_shim_health_argv_forms() -> None:
    assert HealthConfig(["CMD", "ls", "-l"]).argv() == ["ls", "-l"]
    assert HealthConfig(["CMD-SHELL", "exit 1"]).argv() == ["/bin/sh", "-c", "exit 1"]
    assert HealthConfig("curl x").argv() == ["/bin/sh", "-c", "curl x"]
    assert HealthConfig(["NONE"]).argv() is None
    with pytest.raises(ValueError):
        HealthConfig(["BOGUS"]).argv()
    cfg = HealthConfig.from_dict({"test": ["CMD", "true"], "interval": 2, "retries": 5})
    assert (cfg.interval, cfg.timeout, cfg.retries, cfg.start_interval) == (2.0, 30.0, 5, 5.0)


def test_shim_health_transitions() -> None:
    clock = Clock()
    h = HealthMonitor(
        HealthConfig(["CMD", "x"], interval=10, retries=2, start_period=30, start_interval=1), clock
    )
    h.container_started()
    assert h.status == STARTING and not h.due()
    assert h.next_at == clock.t + 1  # start_interval inside the start period
    clock.t += 1
    assert h.due()
    h.probe_started()
    assert not h.due()
    h.probe_finished(1, b"no", clock.t, clock.t)  # failures in the start period do not count
    assert (h.status, h.failing_streak) == (STARTING, 0)
    h.probe_finished(0, b"ok", clock.t, clock.t)
    assert h.status == HEALTHY
    assert h.next_at == clock.t + 10
    clock.t += 40
    h.probe_finished(1, b"bad", clock.t, clock.t)
    assert (h.status, h.failing_streak) == (HEALTHY, 1)
    h.probe_finished(-1, h.timed_out_output(), clock.t, clock.t)
    assert (h.status, h.failing_streak) == (UNHEALTHY, 2)
    for i in range(5):
        h.probe_finished(0, b"x" * 5000, clock.t + i, clock.t + i)
    d = h.to_dict()
    assert d["Status"] == HEALTHY and d["FailingStreak"] == 0
    assert len(d["Log"]) == 5 and len(d["Log"][0]["Output"]) == 4096  # type: ignore[index]
    h.container_stopped()
    assert not h.due()


# --- logs ---------------------------------------------------------------------------------------


def test_shim_time_format_and_parse() -> None:
    ns = 1_700_000_000_123_456_780
    text = format_time_ns(ns)
    assert text == "2023-11-14T22:13:20.12345678Z"
    assert parse_time_ns(text) == ns
    assert format_time_ns(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert parse_time_ns("2023-11-14T23:13:20+01:00") == 1_700_000_000_000_000_000
    assert parse_time_ns("1700000000") == 1_700_000_000_000_000_000


def test_shim_logs_lines_partial_and_binary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.log")
    w = LogWriter(path)
    w.write("stdout", b"hel")
    w.write("stdout", b"lo\nwor")
    w.write("stderr", b"\xff\xfe bin \xc3\x28\n")
    w.write("stdout", b"x" * 40000 + b"\n")
    w.close()
    recs = list(read_logs(path))
    raw = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert raw[0]["log"] == "hello\n" and raw[0]["stream"] == "stdout" and "partial" not in raw[0]
    assert [r.partial for r in recs] == [False, False, True, True, False]  # 16 KiB pieces
    assert (
        b"".join(r.data for r in recs if r.stream == "stdout")
        == b"hello\nwor" + b"x" * 40000 + b"\n"
    )
    assert b"".join(r.data for r in recs if r.stream == "stderr") == b"\xff\xfe bin \xc3\x28\n"


def test_shim_logs_rotate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.log")
    w = LogWriter(path, max_size=1024, max_file=3)
    lines = [f"line {i:04d}\n".encode() for i in range(500)]
    for line in lines:
        w.write("stdout", line)
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["c.log", "c.log.1", "c.log.2"]
    assert all(os.path.getsize(tmp_path / n) <= 1024 for n in os.listdir(tmp_path))
    kept = [r.data for r in read_logs(path)]
    assert kept == lines[-len(kept) :] and 20 < len(kept) < 60  # the newest, in order
    assert [r.data for r in read_logs(path, tail=3)] == lines[-3:]


def test_shim_logs_write_failure_drops_and_counts(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.log")
    w = LogWriter(path)
    w.write("stdout", b"one\n")
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    w.write("stdout", b"two\nthree\n")
    monkeypatch.setattr(os, "write", real_write)
    w.write("stdout", b"four\n")
    w.close()
    assert (w.dropped, w.last_error.endswith("No space left on device")) == (2, True)
    assert [r.data for r in read_logs(path)] == [b"one\n", b"four\n"]


def test_shim_logs_follow_across_rotation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.log")
    w = LogWriter(path, max_size=200, max_file=2)
    w.write("stdout", b"first\n")
    got: list[bytes] = []
    stop = {"n": 0}

    def should_stop() -> bool:  # called only when the reader is idle: one more line each time
        i = stop["n"]
        stop["n"] += 1
        if i < 10:
            w.write("stdout", f"more {i}\n".encode())
        return i >= 10

    for rec in follow_logs(path, stop=should_stop, poll=0):
        got.append(rec.data)
    assert got == [b"first\n"] + [f"more {i}\n".encode() for i in range(10)]
    assert os.path.exists(path + ".1")  # it did rotate (200 bytes hold two records)
