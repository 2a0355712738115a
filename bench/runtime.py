"""Benchmark stackd-runtime against runc and crun: `run` and create/start/wait/delete of busybox
/bin/true, `exec` latency into a running container, and the in-process api (fork from a warm process).

Usage: .venv/bin/python bench/runtime.py [-n N]. Prints medians in ms (the runtimes take turns in
every round, so background load falls on all alike) and the ratios to runc and crun.
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


def lifecycle(rt: list[str], bundle: str, cid: str) -> float:
    """create, start, poll state until stopped, delete (what a shim does), in ms."""
    t = time.perf_counter()
    subprocess.run([*rt, "create", "--bundle", bundle, cid], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*rt, "start", cid], check=True)
    while json.loads(subprocess.run([*rt, "state", cid], capture_output=True, check=True).stdout)["status"] != "stopped":
        pass
    subprocess.run([*rt, "delete", cid], check=True)
    return (time.perf_counter() - t) * 1000


def bench_runtimes(runtimes: dict[str, list[str]], bundle: str, n: int) -> dict[str, dict[str, float]]:
    """Medians of run, lifecycle and exec per runtime; the runtimes take turns in every round, so
    load from other processes on the machine falls on all of them alike."""
    roots = {name: tempfile.mkdtemp(prefix="bench-rt-") for name in runtimes}
    rts = {name: [*base, "--root", roots[name]] for name, base in runtimes.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {"run": [], "lifecycle": [], "exec": []} for name in runtimes}
    failed: set[str] = set()

    def each(metric: str, fn: object) -> None:
        for i in range(n):
            for name, rt in rts.items():
                if name in failed:
                    continue
                try:
                    samples[name][metric].append(fn(rt, i))  # type: ignore[operator]
                except subprocess.CalledProcessError as e:
                    print(f"{name}: {metric} failed: {e}")
                    failed.add(name)

    try:
        each("run", lambda rt, i: timed([*rt, "run", "--bundle", bundle, f"r{i}"]))
        each("lifecycle", lambda rt, i: lifecycle(rt, bundle, f"c{i}"))
        cfg_path = os.path.join(bundle, "config.json")
        with open(cfg_path) as f:
            orig = f.read()
        cfg = json.loads(orig)
        cfg["process"]["args"] = ["sleep", "1000"]
        with open(cfg_path, "w") as f:
            f.write(json.dumps(cfg))
        ex = {name: f"ex{k}" for k, name in enumerate(rts)}  # runc and crun share cgroup paths by id
        try:
            for name, rt in rts.items():
                subprocess.run([*rt, "run", "-d", "--bundle", bundle, ex[name]], check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            with open(cfg_path, "w") as f:
                f.write(orig)
        each("exec", lambda rt, i: timed([*rt, "exec", ex[next(k for k, v in rts.items() if v is rt)], "/bin/true"]))
        for name, rt in rts.items():
            subprocess.run([*rt, "delete", "-f", ex[name]], check=False)
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    return {name: {m: statistics.median(v) if v else float("nan") for m, v in d.items()}
            for name, d in samples.items() if name not in failed}


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
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "stackd")], check=True,
                   stdout=subprocess.DEVNULL)
    d = tempfile.mkdtemp(prefix="bench-bundle-")
    try:
        bundle = make_bundle(os.path.join(d, "bundle"))
        runtimes = {
            "stackd-runtime (console script)": [os.path.join(os.path.dirname(sys.executable), "stackd-runtime")],
            "stackd-runtime (-SE launcher)": launcher(d),
        }
        if shutil.which("runc"):
            runtimes["runc"] = ["runc"]
        if shutil.which("crun"):  # crun refuses this hybrid host unless the cgroup2 mount is hidden
            wrapper = os.path.join(d, "crun-wrapper")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"' crun \"$@\"\n")
            os.chmod(wrapper, 0o755)
            runtimes["crun"] = [wrapper]
        results = bench_runtimes(runtimes, bundle, n)
        api_ms = bench_api(bundle, n)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'runtime':34} {'run':>8} {'lifecycle':>10} {'exec':>8}   (median ms of {n}, runtimes interleaved)")
    for name, r in results.items():
        print(f"{name:34} {r['run']:8.1f} {r['lifecycle']:10.1f} {r['exec']:8.1f}")
    print(f"{'stackd api in-process (fork)':34} {api_ms:8.1f}   (create+start+wait+delete)")
    print()
    print(f"{'ratio (stackd / peer; < 1 is faster)':44} {'run':>6} {'lifecycle':>10} {'exec':>6} {'api/run':>8}")
    for ours in ("stackd-runtime (-SE launcher)", "stackd-runtime (console script)"):
        for peer in ("runc", "crun"):
            if ours in results and peer in results:
                o, r = results[ours], results[peer]
                label = f"{ours.removeprefix('stackd-runtime ')} vs {peer}"
                print(f"{label:44} {o['run'] / r['run']:5.2f}x {o['lifecycle'] / r['lifecycle']:9.2f}x "
                      f"{o['exec'] / r['exec']:5.2f}x {api_ms / r['run']:7.2f}x")


if __name__ == "__main__":
    main()
