#!/usr/bin/env python3
"""Benchmark networking: create a network + attach 20, TCP throughput peer→peer and host→published port.

stackd attaches named netns (`ip netns add`) through `NetManager`; docker and podman (when
installed, with the busybox image present) connect 20 running containers (on their default network) with
`network connect`. Throughput uses the same Python sender/receiver run inside each namespace (nsenter), so
only the data path differs: bridge+veth, and DNAT (stackd) vs docker-proxy/iptables vs netavark.
Run as root: `.venv/bin/python bench/net.py [--count 20] [--mib 1024]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from stackd.net.ipam import Pool
from stackd.net.linux import LinuxKernel
from stackd.net.manager import NetManager, NetworkSpec

IMAGE = os.environ.get("BENCH_BUSYBOX", "127.0.0.1:5055/library/busybox:latest")


def sh(*cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


def free_port() -> int:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); buf = bytearray(1 << 20); v = memoryview(buf)
while c.recv_into(v): pass
c.sendall(b"k"); c.close()
"""

CLIENT = """
import socket, sys, time
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes(1 << 20); c = socket.create_connection((host, port)); t = time.perf_counter()
for _ in range(mib): c.sendall(data)
c.shutdown(socket.SHUT_WR); c.recv(1); print(mib / (time.perf_counter() - t))
"""


def pump(server_ns: str, client_ns: str, host: str, port: int, listen: int, mib: int) -> float:
    """MiB/s from a Python sender in `client_ns` ("" = the host) to a receiver in `server_ns`
    (both the host's python3 run inside the namespaces with nsenter, so every peer runs the same
    code and only the network path differs)."""
    return statistics.median(_pump(server_ns, client_ns, host, port, listen, mib) for _ in range(RUNS))


RUNS = 3


def _pump(server_ns: str, client_ns: str, host: str, port: int, listen: int, mib: int) -> float:
    py = shutil.which("python3") or sys.executable
    srv = subprocess.Popen(["nsenter", f"--net={server_ns}", py, "-c", SERVER, str(listen)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        pre = ["nsenter", f"--net={client_ns}"] if client_ns else []
        p = sh(*pre, py, "-c", CLIENT, host, str(port), str(mib))
        return float(p.stdout.strip())
    finally:
        srv.kill()
        srv.wait()


def bench_stackd(count: int, mib: int) -> dict[str, float]:
    tag = "sdb" + os.urandom(2).hex()
    root = tempfile.mkdtemp(prefix="stackd-bench-net-")
    m = NetManager(root, LinuxKernel(), pools=[Pool("10.214.0.0/16", 24)], link_prefix=tag, table=tag)
    names = [f"{tag}n{i}" for i in range(count)]
    out: dict[str, float] = {}
    try:
        for n in names:
            sh("ip", "netns", "add", n)
        t0 = time.perf_counter()
        m.create_network(NetworkSpec("bench"))
        atts = [m.attach(f"c{i}", f"/run/netns/{n}", "bench", names=(f"c{i}",)) for i, n in enumerate(names)]
        out["create+attach"] = time.perf_counter() - t0
        port = free_port()
        ns_a, ns_b = f"/run/netns/{names[0]}", f"/run/netns/{names[1]}"
        out["c2c MiB/s"] = pump(ns_b, ns_a, atts[1].ipv4, 5001, 5001, mib)
        m.publish("c1", [f"{port}:5002"])
        out["host2pub MiB/s"] = pump(ns_b, "", "127.0.0.1", port, 5002, mib)
    finally:
        for a in m.attachments():
            m.detach(a.container_id)
        for n in m.networks():
            m.remove_network(n.name)
        for n in names:
            sh("ip", "netns", "del", n, check=False)
        shutil.rmtree(root, ignore_errors=True)
    return out


def netns_of(tool: str, cid: str) -> str:
    return f"/proc/{sh(tool, 'inspect', '-f', '{{.State.Pid}}', cid).stdout.strip()}/ns/net"


def bench_peer(tool: str, count: int, mib: int) -> dict[str, float] | None:
    if not shutil.which(tool) or sh(tool, "image", "inspect", IMAGE, check=False).returncode != 0:
        return None
    tag = "sdb" + os.urandom(2).hex()
    net = f"{tag}-net"
    ids: list[str] = []
    out: dict[str, float] = {}
    try:
        for i in range(count):
            ids.append(sh(tool, "run", "-d", "--name", f"{tag}-{i}", IMAGE,
                          "sleep", "3600").stdout.strip())
        t0 = time.perf_counter()
        sh(tool, "network", "create", net)
        for cid in ids:
            sh(tool, "network", "connect", net, cid)
        out["create+attach"] = time.perf_counter() - t0
        fmt = '{{(index .NetworkSettings.Networks "NET").IPAddress}}'.replace("NET", net)
        ip1 = sh(tool, "inspect", "-f", fmt, ids[1]).stdout.strip()
        out["c2c MiB/s"] = pump(netns_of(tool, ids[1]), netns_of(tool, ids[0]), ip1, 5001, 5001, mib)
        port = free_port()
        ids.append(sh(tool, "run", "-d", "--network", net, "-p", f"{port}:5002", "--name",
                      f"{tag}-pub", IMAGE, "sleep", "3600").stdout.strip())
        out["host2pub MiB/s"] = pump(netns_of(tool, ids[-1]), "", "127.0.0.1", port, 5002, mib)
    except RuntimeError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
    finally:
        if ids:
            sh(tool, "rm", "-f", *ids, check=False)
        sh(tool, "network", "rm", net, check=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3, help="throughput runs (median)")
    args = ap.parse_args()
    global RUNS
    RUNS = args.runs
    results = {"stackd": bench_stackd(args.count, args.mib)}
    for tool in ("docker", "podman"):
        got = bench_peer(tool, args.count, args.mib)
        if got is None:
            print(f"{tool}: not installed or no {IMAGE} image; skipped")
        else:
            results[tool] = got
    keys = ["create+attach", "c2c MiB/s", "host2pub MiB/s"]
    print(f"{'':10}" + "".join(f"{k:>18}" for k in keys))
    for name, r in results.items():
        print(f"{name:10}" + "".join(f"{r.get(k, float('nan')):>18.3f}" for k in keys))
    base = results["stackd"]
    for name, r in results.items():
        if name == "stackd":
            continue
        ratios = []
        for k in keys:
            if k in r and k in base:
                ratios.append(f"{k}: stackd/{name} = {base[k] / r[k]:.2f}")
        print("; ".join(ratios))


if __name__ == "__main__":
    main()
