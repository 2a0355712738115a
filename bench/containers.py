"""Benchmark `stackd container run --rm busybox true` against `docker run --rm` and `podman run --rm`,
50 detached containers started one after another, and the RSS of the per-container shim
(stackd's shim vs containerd-shim-runc-v2 and conmon) with 20 containers running.

Usage: .venv/bin/python bench/containers.py [-n N] [--runtime R] [--skip-peers]. stackd runs
through `stackd daemon` on the benchmark's roots (docker has dockerd running), and again
embedded (no daemon: every command starts from cold). The busybox image
comes from the registry on 127.0.0.1:5055 (docker and podman have it pulled as
127.0.0.1:5055/library/busybox:latest; stackd pulls `busybox` through a docker.io mirror there).
Prints medians in ms, ratios to docker, and shim RSS in MB. Targets: run --rm ≤ 0.5× docker; shim ≤ 10 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKD = os.path.join(os.path.dirname(sys.executable), "stackd")
PEER_IMAGE = "127.0.0.1:5055/library/busybox:latest"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stackd_daemon import stackd_daemon  # noqa: E402


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - t0) * 1000


def rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return out


def pids_matching(pred: object) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if pred(cmd):  # type: ignore[operator]
                found.append(int(p))
    return found


def remove_networks(state_root: str, env: dict[str, str]) -> None:
    """Delete the bridges (and rules) the benchmark's stackd created: its state root goes away."""
    sys.path.insert(0, REPO)
    from stackd.engine.engine import net_manager

    try:
        net = net_manager(state_root, environ=env)
        for rec in net.networks():
            net.remove_network(rec.name)
    except Exception as exc:  # leave the host as clean as possible, and say what is left
        print(f"warning: network cleanup: {exc}", file=sys.stderr)


class Tool:
    def __init__(self, name: str, base: list[str], image: str, env: dict[str, str] | None = None) -> None:
        self.name, self.base, self.image, self.env = name, base, image, env

    def run_rm(self) -> float:
        return timed([*self.base, "run", "--rm", self.image, "true"], self.env)

    def start_detached(self, n: int, prefix: str) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            subprocess.run([*self.base, "run", "-d", "--name", f"{prefix}{i}", self.image, "sleep", "600"],
                           check=True, stdout=subprocess.DEVNULL, env=self.env)
        return (time.perf_counter() - t0) * 1000

    def remove(self, n: int, prefix: str) -> None:
        names = [f"{prefix}{i}" for i in range(n)]
        subprocess.run([*self.base, "rm", "-f", *names], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=self.env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--runtime", default=os.environ.get("STACKD_RUNTIME", "stackd-runtime"))
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="stackd-bench-")
    reg = os.path.join(tmp, "registries.toml")
    with open(reg, "w") as f:
        f.write('[registry."docker.io"]\nmirrors = ["http://127.0.0.1:5055"]\n')
    env = {**os.environ, "STACKD_STATE_ROOT": f"{tmp}/state", "STACKD_RUN_ROOT": f"{tmp}/run",
           "STACKD_REGISTRIES_CONFIG": reg, "STACKD_RUNTIME": args.runtime,
           "STACKD_CGROUP_PARENT": f"/stackd-bench-{os.getpid()}",
           "STACKD_NET_LINK_PREFIX": "sbench", "STACKD_NET_TABLE": "stackd_bench"}
    subprocess.run([STACKD, "image", "pull", "-q", "busybox"], check=True, env=env, stdout=subprocess.DEVNULL)
    daemon = contextlib.ExitStack()
    daemon.enter_context(stackd_daemon(env, os.path.join(tmp, "daemon.log")))
    tools = [Tool(f"stackd ({args.runtime})", [STACKD, "container"], "busybox", env),
             Tool("stackd embedded", [STACKD, "container"], "busybox", dict(env, STACKD_NO_DAEMON="1"))]
    if not args.skip_peers:
        for name in ("docker", "podman"):
            if shutil.which(name):
                tools.append(Tool(name, [name], PEER_IMAGE))
    def is_stackd_shim(cmd: bytes) -> bool:
        return b"stackd.engine.shim" in cmd and b"shim.launcher" not in cmd and tmp.encode() in cmd

    shims = {
        **{t.name: is_stackd_shim for t in tools[:2]},
        "docker": lambda c: c.startswith(b"/usr/bin/containerd-shim-runc-v2") or b"containerd-shim-runc-v2\0" in c,
        "podman": lambda c: c.split(b"\0")[0].endswith(b"conmon"),
    }
    results: dict[str, dict[str, float]] = {}
    try:
        for t in tools:
            t.run_rm()  # warm up
            runs = [t.run_rm() for _ in range(args.n)]
            r = results[t.name] = {"run --rm": statistics.median(runs)}
            r["50 detached"] = t.start_detached(50, "bench50-")
            t.remove(50, "bench50-")
            t.start_detached(20, "bench20-")
            sizes = rss_mb(pids_matching(shims[t.name]))
            r["shim RSS MB"] = statistics.median(sizes) if sizes else float("nan")
            r["shims"] = len(sizes)
            t.remove(20, "bench20-")
    finally:
        for t in tools:
            t.remove(50, "bench50-")
            t.remove(20, "bench20-")
        daemon.close()
        remove_networks(f"{tmp}/state", env)
        shutil.rmtree(tmp, ignore_errors=True)
        for ctrl in os.listdir("/sys/fs/cgroup"):  # the (now empty) cgroup parent
            try:
                os.rmdir(f"/sys/fs/cgroup/{ctrl}{env['STACKD_CGROUP_PARENT']}")
            except OSError:
                pass
    docker = results.get("docker")
    print(f"{'':22} {'run --rm ms':>12} {'50 -d ms':>10} {'shim MB':>8} {'shims':>6} {'vs docker':>10}")
    for name, r in results.items():
        ratio = f"{r['run --rm'] / docker['run --rm']:.2f}x" if docker else "-"
        print(f"{name:22} {r['run --rm']:12.1f} {r['50 detached']:10.0f} {r['shim RSS MB']:8.2f} "
              f"{int(r['shims']):6d} {ratio:>10}")
    s = results[tools[0].name]
    if docker:
        print(f"target run --rm <= 0.5x docker: {'met' if s['run --rm'] <= 0.5 * docker['run --rm'] else 'NOT met'}")
    print(f"target shim <= 10 MB: {'met' if s['shim RSS MB'] <= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
