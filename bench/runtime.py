"""Benchmark stackd-runtime against runc and crun: `run` and create/start/wait/delete of busybox
/bin/true, `exec` latency into a running container, and the in-process api (fork from a warm process).

Usage: .venv/bin/python bench/runtime.py [-n N]. Prints medians in ms and ratios to runc/crun.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_bundle(d: str) -> str:
    from stackd.engine.runtime.config import default_spec

    rootfs = os.path.join(d, "rootfs")
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, sub))
    shutil.copy2("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for a in ("true", "sh", "sleep"):
        os.symlink("busybox", os.path.join(rootfs, "bin", a))
    cfg = default_spec()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    cfg["ociVersion"] = "1.0.2"  # crun 1.8 refuses newer versions
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def launcher(d: str) -> list[str]:
    """A minimal launcher: the interpreter with -S -E (no site, no env), path set by hand."""
    path = os.path.join(d, "stackd-runtime-fast")
    with open(path, "w") as f:
        f.write(f"#!{os.path.realpath(sys.executable)} -SE\nimport sys\nsys.path.insert(0, {REPO!r})\n"
                "from stackd.engine.runtime.cli import main\nsys.exit(main())\n")
    os.chmod(path, 0o755)
    return [path]


def timed(argv: list[str], **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return (time.perf_counter() - t) * 1000


def bench_runtime(name: str, base: list[str], bundle: str, n: int) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix=f"bench-{name}-")
    rt = [*base, "--root", root]
    out: dict[str, float] = {}
    try:
        runs, cycles, execs = [], [], []
        for i in range(n):
            runs.append(timed([*rt, "run", "--bundle", bundle, f"r{i}"]))
        for i in range(n):
            t = time.perf_counter()
            subprocess.run([*rt, "create", "--bundle", bundle, f"c{i}"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*rt, "start", f"c{i}"], check=True)
            while json.loads(subprocess.run([*rt, "state", f"c{i}"], capture_output=True, check=True).stdout)["status"] != "stopped":
                pass
            subprocess.run([*rt, "delete", f"c{i}"], check=True)
            cycles.append((time.perf_counter() - t) * 1000)
        cfg_path = os.path.join(bundle, "config.json")
        with open(cfg_path) as f:
            orig = f.read()
        cfg = json.loads(orig)
        cfg["process"]["args"] = ["sleep", "1000"]
        with open(cfg_path, "w") as f:
            f.write(json.dumps(cfg))
        try:
            subprocess.run([*rt, "run", "-d", "--bundle", bundle, "ex"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        finally:
            with open(cfg_path, "w") as f:
                f.write(orig)
        for _ in range(n):
            execs.append(timed([*rt, "exec", "ex", "/bin/true"]))
        subprocess.run([*rt, "delete", "-f", "ex"], check=False)
        out = {"run": statistics.median(runs), "lifecycle": statistics.median(cycles), "exec": statistics.median(execs)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def bench_api(bundle: str, n: int) -> float:
    from stackd.engine.runtime import api

    root = tempfile.mkdtemp(prefix="bench-api-")
    devnull = os.open(os.devnull, os.O_RDWR)
    api.subreaper()
    times = []
    try:
        for i in range(n + 2):
            t = time.perf_counter()
            pid = api.create(root, f"a{i}", bundle, stdio=(devnull, devnull, devnull))
            api.start(root, f"a{i}")
            os.waitpid(pid, 0)
            api.delete(root, f"a{i}")
            if i >= 2:  # warm-up
                times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(devnull)
        shutil.rmtree(root, ignore_errors=True)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[sys.argv.index("-n") + 1]) if "-n" in sys.argv else 15
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "stackd")], check=True)
    d = tempfile.mkdtemp(prefix="bench-bundle-")
    try:
        bundle = make_bundle(os.path.join(d, "bundle"))
        results = {
            "stackd-runtime (console script)": bench_runtime("stackd", [os.path.join(os.path.dirname(sys.executable), "stackd-runtime")], bundle, n),
            "stackd-runtime (-SE launcher)": bench_runtime("fast", launcher(d), bundle, n),
        }
        if shutil.which("runc"):
            results["runc"] = bench_runtime("runc", ["runc"], bundle, n)
        if shutil.which("crun"):  # crun refuses this hybrid host unless the cgroup2 mount is hidden
            wrapper = os.path.join(d, "crun-wrapper")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"' crun \"$@\"\n")
            os.chmod(wrapper, 0o755)
            try:
                results["crun"] = bench_runtime("crun", [wrapper], bundle, n)
            except subprocess.CalledProcessError as e:
                print(f"crun failed on this host: {e}")
        api_ms = bench_api(bundle, n)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'runtime':34} {'run':>8} {'lifecycle':>10} {'exec':>8}   (median ms, n={n})")
    for name, r in results.items():
        print(f"{name:34} {r['run']:8.1f} {r['lifecycle']:10.1f} {r['exec']:8.1f}")
    print(f"{'stackd api in-process (fork)':34} {api_ms:8.1f}")
    ours = results["stackd-runtime (-SE launcher)"]
    for peer in ("runc", "crun"):
        if peer in results:
            r = results[peer]
            print(f"ratio vs {peer}: run {ours['run'] / r['run']:.2f}x, lifecycle {ours['lifecycle'] / r['lifecycle']:.2f}x, "
                  f"exec {ours['exec'] / r['exec']:.2f}x, api {api_ms / r['run']:.2f}x of {peer} run")


if __name__ == "__main__":
    main()
