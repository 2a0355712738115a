"""Benchmark stack lifecycles: stackd vs docker-compose and podman-compose on N busybox `sleep` services.

For each N (default 10 and 50), each round runs, per tool (the order alternates between rounds):
cold `up -d`, no-op `up -d`, `up -d` after one service's environment changed, and `down`.
All tools start with the image present (pre-pulled). Prints medians in seconds, ratios to
docker-compose, and the targets (every phase <= 0.25x docker-compose, no-op < 0.15 s, N=50 no
worse than linear in N).

Usage: .venv/bin/python bench/compose.py [-n 10 -n 50] [--rounds R]
       [--tools stackd,stackd-embedded,docker-compose,podman-compose]
`stackd` runs its commands through `stackd daemon` (started on the benchmark's roots, as
docker-compose talks to a running dockerd); `stackd-embedded` runs the same without the daemon.
stackd runs on throwaway state/run roots with its own nftables table, link prefix, address pool and
cgroup parent; `image: busybox` resolves through a docker.io mirror on 127.0.0.1:5055 (the peers use
127.0.0.1:5055/library/busybox:latest, which setup-peers.sh pulled). Everything created is removed,
also when a run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STACKD = os.path.join(os.path.dirname(sys.executable), "stackd")
PEER_IMAGE = "127.0.0.1:5055/library/busybox:latest"
PODMAN_COMPOSE = os.environ.get("PODMAN_COMPOSE", "/tmp/anchors/pcvenv/bin/podman-compose")
PHASES = ("up", "noop", "change", "down")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stackd_daemon import stackd_daemon  # noqa: E402


def stack_yaml(n: int, image: str, mark: str) -> str:
    lines = ["services:"]
    for i in range(n):
        lines += [f"  s{i}:", f"    image: {image}", '    command: ["sleep", "3600"]', "    stop_signal: SIGKILL"]
        if i == 0:
            lines += ["    environment:", f"      MARK: \"{mark}\""]
    return "\n".join(lines) + "\n"


class Tool:
    """One compose implementation: its command line, the image name it uses, its environment."""

    def __init__(self, name: str, argv: list[str], image: str, env: dict[str, str]) -> None:
        self.name, self.argv, self.image, self.env = name, argv, image, env

    def run(self, project: str, file: Path, *args: str, check: bool = True) -> float:
        t0 = time.perf_counter()
        res = subprocess.run([*self.argv, "-p", project, "-f", str(file), *args], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=file.parent,
                             timeout=600)
        dt = time.perf_counter() - t0
        if check and res.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: exit {res.returncode}: {res.stderr[-2000:]}")
        return dt

    def down(self, project: str, file: Path) -> float:
        return self.run(project, file, "down", "-t", "1")


def one_round(tool: Tool, n: int, workdir: Path, rnd: int) -> dict[str, float]:
    d = workdir / f"{tool.name}-{n}-{rnd}"
    d.mkdir()
    file = d / "stack.yaml"
    project = f"bench{rnd}n{n}{''.join(w[0] for w in tool.name.split('-'))}"
    file.write_text(stack_yaml(n, tool.image, "a"))
    out: dict[str, float] = {}
    try:
        out["up"] = tool.run(project, file, "up", "-d")
        out["noop"] = tool.run(project, file, "up", "-d")
        file.write_text(stack_yaml(n, tool.image, "b"))
        out["change"] = tool.run(project, file, "up", "-d")
        out["down"] = tool.down(project, file)
    except BaseException:
        with contextlib.suppress(Exception):
            tool.run(project, file, "down", "-t", "1", check=False)
        raise
    return out


# --- stackd's throwaway world and its cleanup --------------------------------------------------

def stackd_env(tmp: Path, tag: str, runtime: str | None) -> dict[str, str]:
    reg = tmp / "registries.toml"
    reg.write_text('[registry."docker.io"]\nmirrors = ["http://127.0.0.1:5055"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(STACKD_STATE_ROOT=str(tmp / "state"), STACKD_RUN_ROOT=str(tmp / "run"),
               STACKD_REGISTRIES_CONFIG=str(reg), STACKD_CGROUP_PARENT=f"/stackd-bench-{tag}",
               STACKD_NET_TABLE=tag, STACKD_NET_LINK_PREFIX=tag, STACKD_NET_POOLS="10.219.0.0/16:24")
    if runtime:
        env["STACKD_RUNTIME"] = runtime
    return env


def stackd_clean(tmp: Path, env: dict[str, str]) -> None:
    """Kill what lives under the run root, unmount, remove cgroups, links, the nft table, the roots."""
    run, state, tag = str(tmp / "run"), str(tmp / "state"), env["STACKD_NET_TABLE"]
    dns_pid = tmp / "state" / "net" / "dns.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(dns_pid.read_text().split()[0]), signal.SIGKILL)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if run.encode() in cmd or state.encode() in cmd:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f]
    for mp in reversed(mps):
        if mp.startswith(run) or mp.startswith(state):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    parent = env["STACKD_CGROUP_PARENT"].lstrip("/")
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        d = ctrl / parent
        if d.is_dir():
            for p in sorted((q for q in d.rglob("*") if q.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    p.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
    for name in os.listdir("/sys/class/net"):
        if name.startswith(tag):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    subprocess.run(["nft", "delete", "table", "inet", tag], capture_output=True, check=False)
    shutil.rmtree(tmp, ignore_errors=True)


# --- main ---------------------------------------------------------------------------------------

def median_table(results: dict[int, dict[str, dict[str, list[float]]]]) -> None:
    for n, per_tool in results.items():
        print(f"\nN = {n}: medians in s (ratio to docker-compose)")
        print(f"{'':16}" + "".join(f"{p:>16}" for p in PHASES))
        ref = per_tool.get("docker-compose")
        for name, phases in per_tool.items():
            cells = []
            for p in PHASES:
                if not phases[p]:
                    cells.append(f"{'-':>16}")
                    continue
                m = statistics.median(phases[p])
                ratio = f" ({m / statistics.median(ref[p]):.2f}x)" if ref and ref[p] and name != "docker-compose" else ""
                cells.append(f"{m:7.3f}{ratio:>9}")
            print(f"{name:16}" + "".join(f"{c:>16}" for c in cells))


def targets(results: dict[int, dict[str, dict[str, list[float]]]]) -> None:
    print("\ntargets (stackd):")
    for n, per_tool in results.items():
        s, ref = per_tool.get("stackd"), per_tool.get("docker-compose")
        if not s or not s["down"]:
            continue
        med = {p: statistics.median(s[p]) for p in PHASES}
        if ref and ref["down"]:
            for p in PHASES:
                r = med[p] / statistics.median(ref[p])
                print(f"  N={n} {p:7} {med[p]:.3f} s = {r:.2f}x docker-compose (<= 0.25x): {'met' if r <= 0.25 else 'NOT met'}")
        print(f"  N={n} no-op {med['noop']:.3f} s (< 0.15 s): {'met' if med['noop'] < 0.15 else 'NOT met'}")
    ns = sorted(n for n in results if results[n].get("stackd") and results[n]["stackd"]["down"])
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        for p in PHASES:
            a = statistics.median(results[lo]["stackd"][p])
            b = statistics.median(results[hi]["stackd"][p])
            lin = a * hi / lo
            print(f"  {p:7} N={hi} {b:.3f} s vs linear from N={lo} {lin:.3f} s: {'met' if b <= lin else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, action="append", help="services per stack (repeatable; default 10 and 50)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default="stackd,stackd-embedded,docker-compose,podman-compose")
    ap.add_argument("--runtime", default=None, help="stackd's runtime (default: stackd's default)")
    args = ap.parse_args()
    ns = args.n or [10, 50]
    wanted = args.tools.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="stackd-bench-compose-"))
    tag = "bc" + secrets.token_hex(2)
    senv = stackd_env(tmp, tag, args.runtime)
    tools: list[Tool] = []
    if "stackd" in wanted:  # through `stackd daemon`, as docker-compose goes through dockerd
        tools.append(Tool("stackd", [STACKD], "busybox", senv))
    if "stackd-embedded" in wanted:  # the same, with no daemon: every command starts from cold
        tools.append(Tool("stackd-embedded", [STACKD], "busybox", dict(senv, STACKD_NO_DAEMON="1")))
    if "docker-compose" in wanted and shutil.which("docker-compose"):
        tools.append(Tool("docker-compose", ["docker-compose"], PEER_IMAGE, dict(os.environ)))
    if "podman-compose" in wanted and os.access(PODMAN_COMPOSE, os.X_OK):
        tools.append(Tool("podman-compose", [PODMAN_COMPOSE], PEER_IMAGE, dict(os.environ)))
    results: dict[int, dict[str, dict[str, list[float]]]] = {
        n: {t.name: {p: [] for p in PHASES} for t in tools} for n in ns}
    work = tmp / "stacks"
    work.mkdir()
    daemon = contextlib.ExitStack()
    try:
        if any(t.name == "stackd" for t in tools):
            daemon.enter_context(stackd_daemon(senv, str(tmp / "daemon.log")))
        for t in tools:  # every tool starts with the image present
            if t.name.startswith("stackd"):
                subprocess.run([STACKD, "image", "pull", "-q", "busybox"], check=True, env=senv,
                               stdout=subprocess.DEVNULL)
            else:
                engine = "docker" if t.name == "docker-compose" else "podman"
                have = subprocess.run([engine, "image", "inspect", PEER_IMAGE], capture_output=True).returncode == 0
                if not have:
                    tls = ["--tls-verify=false"] if engine == "podman" else []
                    subprocess.run([engine, "pull", "-q", *tls, PEER_IMAGE], check=True, stdout=subprocess.DEVNULL)
        for n in ns:
            for rnd in range(args.rounds):
                order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
                for t in order:
                    try:
                        r = one_round(t, n, work, rnd)
                    except RuntimeError as exc:  # a peer's own failure (docker-compose races itself)
                        if t.name.startswith("stackd"):
                            raise
                        print(f"N={n} round {rnd} {t.name}: failed, round skipped: {str(exc)[-300:]}",
                              file=sys.stderr, flush=True)
                        continue
                    for p in PHASES:
                        results[n][t.name][p].append(r[p])
                    print(f"N={n} round {rnd} {t.name:15} " + " ".join(f"{p}={r[p]:.3f}" for p in PHASES),
                          file=sys.stderr, flush=True)
    finally:
        daemon.close()
        if any(t.name.startswith("stackd") for t in tools):
            stackd_clean(tmp, senv)
        shutil.rmtree(tmp, ignore_errors=True)
    median_table(results)
    targets(results)


if __name__ == "__main__":
    main()
