#!/usr/bin/env python3
"""Benchmark pull + unpack from a loopback registry: stackd vs docker, podman, skopeo (download only).

Images: (a) Debian bookworm minbase (debootstrap, one layer, cached under /tmp/stackd-bench) and
(b) a 5-layer synthetic image. Every peer found on the machine runs in the same session against the
same registry; medians and ratios are printed. Run as root: `.venv/bin/python bench/pull.py`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CACHE = Path("/tmp/stackd-bench")
MINBASE = CACHE / "minbase"
IMAGES = CACHE / "pull-images"


def sh(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stderr.decode(errors='replace')}")
    return proc


def ensure_minbase() -> None:
    if (MINBASE / "usr").is_dir():
        return
    tmp = CACHE / "minbase.tmp"
    _unmount_under(tmp)  # a killed debootstrap leaves /proc mounted inside its target
    shutil.rmtree(tmp, ignore_errors=True)
    print("building the bookworm minbase rootfs with debootstrap (takes minutes, cached)…", flush=True)
    try:
        sh("debootstrap", "--variant=minbase", "bookworm", tmp, "http://deb.debian.org/debian")
    finally:
        _unmount_under(tmp)
    tmp.rename(MINBASE)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as f:
        targets = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        sh("umount", "-l", target)
    with open("/proc/mounts") as f:
        if any(line.split()[1].startswith(prefix) for line in f):
            raise SystemExit(f"{path}: still has mounts; refusing to delete it")


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(layout: Path, tar_layers: list[bytes]) -> None:
    """An OCI layout (tag `latest`) from uncompressed layer tars, gzip-compressed."""
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gzip.compress(t, 6, mtime=0))} for t in tar_layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in tar_layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, config)},
                           "layers": layers}).encode()
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, manifest),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))


def build_images(only: str | None) -> dict[str, Path]:
    out = {"minbase": IMAGES / "minbase", "five": IMAGES / "five"}
    if only:
        out = {only: out[only]}
    if "minbase" in out and not (out["minbase"] / "index.json").exists():
        ensure_minbase()
        # As Debian's images do: no downloaded .debs, no apt lists.
        tar = sh("tar", "--numeric-owner", "--sort=name", "--xattrs", "--exclude=./var/cache/apt/archives/*.deb",
                 "--exclude=./var/lib/apt/lists/*_*", "-C", MINBASE, "-cf", "-", ".").stdout
        write_layout(out["minbase"], [tar])
    if "five" in out and not (out["five"] / "index.json").exists():
        layers = []
        for i in range(5):
            d = Path(tempfile.mkdtemp(dir=CACHE))
            rnd = os.urandom(4 << 20)
            for j in range(300):
                (d / f"l{i}" / f"d{j % 10}").mkdir(parents=True, exist_ok=True)
                (d / f"l{i}" / f"d{j % 10}" / f"f{j}").write_bytes(rnd[j * 8192 : (j + 1) * 8192])
            (d / f"l{i}" / "big.bin").write_bytes(rnd)
            layers.append(sh("tar", "--numeric-owner", "--sort=name", "-C", d, "-cf", "-", ".").stdout)
            shutil.rmtree(d)
        write_layout(out["five"], layers)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackRegistry:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="registry-", dir=CACHE))
        self.port = free_port()
        cfg = self.dir / "config.yml"
        cfg.write_text(f"version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n"
                       f"storage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}}}}\nhttp: {{addr: 127.0.0.1:{self.port}}}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.01)
        self.close()
        raise SystemExit("docker-registry did not start")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def timed(run: Callable[[], object], cleanup: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        cleanup()
        t0 = time.perf_counter()
        run()
        out.append(time.perf_counter() - t0)
    cleanup()
    return out


def peers(ref: str, layout: Path, work: Path, baseline: Path | None = None) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """name → (run, cleanup) for every tool installed here."""
    stackd = Path(sys.executable).parent / "stackd"
    state = work / "stackd-state"
    env = {**os.environ, "STACKD_STATE_ROOT": str(state), "STACKD_REGISTRIES_CONFIG": str(work / "none.toml")}
    tools: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "stackd": (lambda: sh(stackd, "image", "pull", "-q", ref, env=env) and None,
                   lambda: shutil.rmtree(state, ignore_errors=True)),
    }
    if baseline is not None:  # another checkout of stackd (e.g. `git archive HEAD stackd | tar -x -C DIR`)
        old_env = {**env, "PYTHONPATH": str(baseline)}
        tools["stackd (baseline)"] = (
            lambda: sh(sys.executable, "-c", "from stackd.cli import main; main()", "image", "pull", "-q", ref, env=old_env) and None,
            lambda: shutil.rmtree(state, ignore_errors=True))
    if shutil.which("docker") and sh("docker", "info", check=False).returncode == 0:
        tools["docker pull"] = (lambda: sh("docker", "pull", "-q", ref) and None,
                                lambda: sh("docker", "rmi", "-f", ref, check=False) and None)
    if shutil.which("podman"):
        tools["podman pull"] = (lambda: sh("podman", "pull", "-q", "--tls-verify=false", ref) and None,
                                lambda: sh("podman", "rmi", "-f", ref, check=False) and None)
    if shutil.which("skopeo"):
        dest = work / "skopeo-dir"
        tools["skopeo copy"] = (lambda: sh("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}") and None,
                                lambda: shutil.rmtree(dest, ignore_errors=True))
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    blobs = [layout / "blobs" / "sha256" / x["digest"][7:] for x in manifest["layers"]]
    untar = work / "tar-x"

    def tar_x() -> None:
        untar.mkdir()
        for b in blobs:
            sh("tar", "-xzf", b, "-C", untar, "--numeric-owner")

    tools["tar -x (layers)"] = (tar_x, lambda: shutil.rmtree(untar, ignore_errors=True))
    # The same into a fresh ext4 block group (parent marked `chattr +T`, as stackd's snapshot tmp
    # dir is): without a journal, ext4 scans past every recently deleted inode of a group on each
    # create, so a plain `tar -x` where the previous run was just removed measures that, not tar.
    spread = work / "tar-x-spread"
    spread.mkdir(exist_ok=True)
    sh("chattr", "+T", spread, check=False)
    fresh: list[Path] = []

    def tar_x_fresh() -> None:
        dest = spread / os.urandom(6).hex()
        dest.mkdir()
        fresh.append(dest)
        for b in blobs:
            sh("tar", "-xzf", b, "-C", dest, "--numeric-owner")

    def clean_fresh() -> None:
        while fresh:
            shutil.rmtree(fresh.pop(), ignore_errors=True)

    tools["tar -x (fresh dir)"] = (tar_x_fresh, clean_fresh)
    return tools


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=["minbase", "five"], default=None)
    ap.add_argument("--tools", default="", help="comma-separated subset of tools to run (default: all found)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a directory holding another version of the stackd package, run as a peer")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    layouts = build_images(args.only)
    reg = LoopbackRegistry()
    work = Path(tempfile.mkdtemp(prefix="pull-bench-", dir=CACHE))
    try:
        for name, layout in layouts.items():
            ref = f"{reg.host}/bench/{name}:latest"
            sh("skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}")
            print(f"\n== {name}: {ref} ({args.runs} runs, medians)")
            wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
            samples = {tool: timed(run, clean, args.runs)
                       for tool, (run, clean) in peers(ref, layout, work, args.baseline).items()
                       if not wanted or tool in wanted or tool.split()[0] in wanted}
            results = {tool: statistics.median(t) for tool, t in samples.items()}
            base = results.get("stackd")
            for tool, med in results.items():
                ratio = f"   stackd/this = {base / med:5.2f}×" if base else ""
                spread = f"   ({min(samples[tool]) * 1000:.0f}-{max(samples[tool]) * 1000:.0f})"
                print(f"  {tool:20s} {med * 1000:8.0f} ms{ratio}{spread}")
            if base and "docker pull" in results:
                print(f"  stackd vs docker pull: {base / results['docker pull']:.2f}× (target ≤ 0.5×)")
            for floor_tool in ("tar -x (layers)", "tar -x (fresh dir)"):
                if base and "skopeo copy" in results and floor_tool in results:
                    floor = results["skopeo copy"] + results[floor_tool]
                    print(f"  stackd vs skopeo copy + {floor_tool} ({floor * 1000:.0f} ms): {base / floor:.2f}× (target ≤ 2×)")
    finally:
        reg.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
