"""Published ports for real: TCP (busybox httpd) and UDP from the host on 127.0.0.1 and on the
host's primary address, closed after `rm`, `container port`, and a conflict that creates nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from tests.engine.containers.conftest import World

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(512)
    s.sendto(b"echo:" + data, peer)
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("0.0.0.0", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def primary_ip() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent: only the route's source address
        return str(s.getsockname()[0])
    finally:
        s.close()


def http_get(ip: str, port: int, timeout: float = 3.0) -> str:
    with socket.create_connection((ip, port), timeout=timeout) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def wait_http(ip: str, port: int) -> str:
    end = time.monotonic() + 5
    while True:
        try:
            return http_get(ip, port)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def udp_ask(ip: str, port: int, msg: bytes) -> bytes:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(msg, (ip, port))
        return s.recv(512)
    finally:
        s.close()


def test_ctr_net_published_ports_tcp_udp_and_closed_after_rm(world: World) -> None:
    w = world
    p_lo, p_all, p_udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    host = primary_ip()
    echo = None
    try:
        w.cli("container", "run", "-d", "--name", "web", "-p", f"127.0.0.1:{p_lo}:80", "-p", f"{p_all}:80",
              "-p", f"{p_udp}:5353/udp", "busybox", "sh", "-c",
              "echo hello-port > /tmp/index.html; httpd -f -p 80 -h /tmp", check=True)
        assert "hello-port" in wait_http("127.0.0.1", p_lo)
        assert "hello-port" in wait_http("127.0.0.1", p_all)
        assert "hello-port" in wait_http(host, p_all)
        out = w.cli("container", "port", "web", check=True).stdout.decode()
        assert f"80/tcp -> 127.0.0.1:{p_lo}" in out and f"5353/udp -> 0.0.0.0:{p_udp}" in out, out
        # UDP: busybox-static has no UDP server (its nc lacks -u), so a host process in the
        # container's network namespace answers on the container's address
        sandbox = json.loads(w.cli("container", "inspect", "web", check=True).stdout)[0]["NetworkSettings"]["SandboxKey"]
        echo = subprocess.Popen(["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO],
                                stdout=subprocess.PIPE)
        assert echo.stdout is not None and echo.stdout.readline() == b"ready\n"
        assert udp_ask("127.0.0.1", p_udp, b"one") == b"echo:one"
        assert udp_ask(host, p_udp, b"two") == b"echo:two"
        w.cli("container", "rm", "-f", "web", check=True)
        for ip, port in (("127.0.0.1", p_lo), ("127.0.0.1", p_all), (host, p_all)):
            try:
                reply = http_get(ip, port, timeout=1)
            except OSError:
                continue
            raise AssertionError(f"{ip}:{port} still answers after rm: {reply[:80]!r}")
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        w.cli("container", "rm", "-f", "web")


def test_ctr_net_port_conflict_is_refused_before_anything_exists(world: World) -> None:
    w = world
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("0.0.0.0", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        res = w.cli("container", "run", "-d", "--name", "c1", "-p", f"{port}:80", "busybox", "sleep", "60")
        err = res.stderr.decode()
        assert res.returncode == 1 and f"{port}/tcp" in err and "already in use" in err, err
        assert "Traceback" not in err
        busy.close()
        # a port published by another running stackd container
        w.cli("container", "run", "-d", "--name", "c2", "--stop-signal", "KILL", "-p", f"{port}:80",
              "busybox", "sleep", "60", check=True)
        res = w.cli("container", "create", "--name", "c3", "-p", f"{port}:80", "busybox", "true")
        assert res.returncode == 1 and "already published" in res.stderr.decode(), res.stderr
        names = w.cli("container", "ls", "-a", "--format", "{{.Names}}", check=True).stdout.decode().split()
        assert names == ["c2"]
        assert len(os.listdir(w.run / "netns")) == 1
        # once c2 stops it holds no host port: the same port can be used again
        w.cli("container", "stop", "c2", check=True)
        w.cli("container", "create", "--name", "c3", "-p", f"{port}:80", "busybox", "true", check=True)
    finally:
        busy.close()
        w.cli("container", "rm", "-f", "c1", "c2", "c3")
