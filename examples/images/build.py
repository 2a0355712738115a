#!/usr/bin/env python3
"""Build the example images from Debian packages and serve them from a local docker.io mirror.

    build.py all|busybox|debian|redis   build (cached), start the registry, push, write registries.toml
    build.py build                      build all three into the cache only (no registry; what CI does)
    build.py serve                      ensure the registry runs; print its address
    build.py stop                       stop the registry started by `serve` (by its pid file)
    build.py status                     registry state and what is built and pushed

Images (Docker Hub names, so the same stack files pull from Docker Hub elsewhere):
  library/busybox:latest,<ver>   Debian's busybox-static, every applet linked in /bin
  library/debian:bookworm        `debootstrap --variant=minbase`, apt caches dropped like Debian's
  library/redis:7,latest         FROM debian + redis-server as a second layer, Docker's layout
                                 (entrypoint, WORKDIR/VOLUME /data, protected mode off)

Environment: STACKD_EXAMPLES_CACHE (default /var/cache/stackd-examples) holds the OCI layout,
stamps and the registry's storage; STACKD_EXAMPLES_REGISTRY_PORT picks the port (default 5000,
or a free one when 5000 is taken); STACKD_REGISTRIES_CONFIG (default /etc/stackd/registries.toml)
receives `[registry."docker.io"] mirrors = ["http://127.0.0.1:PORT"]`; STACKD_DEBIAN_MIRROR
overrides the Debian mirror (default: the one apt uses on this machine).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RECIPE = "2"  # bump to rebuild every cached image
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


class BuildError(Exception):
    """A build step failed; the message is one line for the user."""


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(*cmd: str | Path, what: str = "") -> str:
    """Run a command; on failure raise BuildError with its last line of output."""
    args = [str(c) for c in cmd]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BuildError(f"{args[0]}: not installed (apt-get install {args[0]})")
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        raise BuildError(f"{what or ' '.join(args[:3])}: exit {proc.returncode}: {lines[-1] if lines else 'no output'}")
    return proc.stdout


class Cache:
    """The cache directory: OCI layout, stamps, work dirs and the registry's files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = root / "oci"
        self.work = root / "work"
        self.stamps = root / "stamps"
        self.reg = root / "registry"

    def prepare(self) -> None:
        for d in (self.work, self.stamps, self.reg / "storage"):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.layout / "index.json").exists():
            run("umoci", "init", "--layout", self.layout)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def digest(self, tag: str) -> str | None:
        try:
            index = json.loads((self.layout / "index.json").read_text())
        except FileNotFoundError:
            return None
        for m in index.get("manifests", []):
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return str(m["digest"])
        return None

    def cached(self, tag: str, inputs: dict[str, str]) -> bool:
        try:
            stamp = json.loads((self.stamps / f"{tag}.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        digest = self.digest(tag)
        return bool(digest is not None and stamp.get("inputs") == inputs and stamp.get("digest") == digest)

    def stamp(self, tag: str, inputs: dict[str, str]) -> str:
        digest = self.digest(tag)
        assert digest is not None
        run("umoci", "gc", "--layout", self.layout)
        (self.stamps / f"{tag}.json").write_text(json.dumps({"inputs": inputs, "digest": digest}) + "\n")
        return digest


def cache_root() -> Path:
    return Path(os.environ.get("STACKD_EXAMPLES_CACHE") or "/var/cache/stackd-examples")


# ---- images -----------------------------------------------------------------------------------

def busybox_version(busybox: str = "/bin/busybox") -> str:
    out = run(busybox, what="busybox")
    m = re.search(r"BusyBox v(\d+\.\d+\.\d+)", out)
    if not m:
        raise BuildError(f"{busybox}: cannot read its version")
    return m.group(1)


def fill_busybox_rootfs(root: Path, busybox: str = "/bin/busybox") -> None:
    """Lay out a busybox root filesystem like Docker Hub's busybox image."""
    for d in ("bin", "dev", "etc", "home", "proc", "root", "sys", "usr/sbin", "var/www", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for name in run(busybox, "--list").split():
        link = root / "bin" / name
        if name != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (root / "root").chmod(0o700)
    (root / "tmp").chmod(0o1777)


def build_busybox(layout: Path, work: Path, tag: str = "busybox", busybox: str = "/bin/busybox") -> None:
    """Build the busybox image into `layout` under `tag` (one layer; Cmd ["sh"])."""
    bundle = work / f"{tag}-bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
    try:
        fill_busybox_rootfs(bundle / "rootfs", busybox)
        run("umoci", "repack", "--image", f"{layout}:{tag}", bundle, what="umoci repack busybox")
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "config", "--image", f"{layout}:{tag}", "--os", "linux", "--architecture", "amd64",
        "--config.env", PATH, "--config.cmd", "sh", "--history.created_by", "examples/images/build.py busybox")


def debian_mirror() -> str:
    """STACKD_DEBIAN_MIRROR, else the main Debian mirror in apt's sources, else deb.debian.org."""
    if os.environ.get("STACKD_DEBIAN_MIRROR"):
        return os.environ["STACKD_DEBIAN_MIRROR"].rstrip("/")
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):  # deb822
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return str(fields["URIs"]).split()[0].rstrip("/")
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):  # one-line
            if m.group(2) == SUITE:
                return m.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


def chroot_script(root: Path, script: str, what: str) -> str:
    """Run `script` in `root` with /proc and /dev mounted only for its duration (private mount ns)."""
    outer = (f"set -e; mount -t proc proc {root}/proc; mount --rbind /dev {root}/dev; "
             f'exec chroot {root} /bin/sh -ec "$1"')
    try:
        return run("unshare", "--mount", "--propagation", "private", "sh", "-c", outer, "sh", script, what=what)
    finally:
        unmount_below(root)


def unmount_below(root: Path) -> None:
    """Unmount anything still mounted under `root` (deepest first); normally nothing is."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


APT_CONF = {  # what Debian's Docker images set (debuerreotype)
    "docker-clean": 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
                    '/var/cache/apt/*.bin || true"; };\nAPT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
CLEAN = ("rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb "
         "/var/cache/apt/archives/partial/* /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log "
         "/var/log/bootstrap.log /var/cache/debconf/*-old /var/lib/dpkg/*-old /etc/resolv.conf")


def build_debian(cache: Cache, mirror: str) -> None:
    """debootstrap --variant=minbase into a fresh layer tagged `debian`."""
    tag, bundle = "debian", cache.work / "debian-bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "new", "--image", f"{cache.layout}:{tag}")
    run("umoci", "unpack", "--image", f"{cache.layout}:{tag}", bundle)
    root = bundle / "rootfs"
    try:
        say(f"debootstrap --variant=minbase {SUITE} from {mirror} (a few minutes)")
        t0 = time.monotonic()
        try:
            run("unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
                SUITE, root, mirror, what="debootstrap")
        finally:
            unmount_below(root)
        say(f"debootstrap done in {time.monotonic() - t0:.0f}s")
        for node in (root / "dev").iterdir():  # runtimes provide /dev; images ship it empty
            shutil.rmtree(node) if node.is_dir() and not node.is_symlink() else node.unlink()
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        security = "http://deb.debian.org/debian-security"
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        for name, text in APT_CONF.items():
            (root / "etc/apt/apt.conf.d" / name).write_text(text)
        chroot_script(root, CLEAN, "clean the debian rootfs")
        for f in ("etc/hostname", "etc/machine-id"):
            if (root / f).exists():
                (root / f).write_text("")
        say("packing the debian layer")
        run("umoci", "repack", "--image", f"{cache.layout}:{tag}", bundle, what="umoci repack debian")
    finally:
        unmount_below(root)
        shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "config", "--image", f"{cache.layout}:{tag}", "--os", "linux", "--architecture", "amd64",
        "--config.env", PATH, "--config.cmd", "bash", "--history.created_by", "debootstrap --variant=minbase")


ENTRYPOINT = """#!/bin/sh
# Docker Hub's redis entrypoint, made smaller: options alone run redis-server; without a config
# file protected mode is turned off; as root, /data is given to redis and privileges dropped.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
\tset -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
\tcase " $* " in
\t\t*" --protected-mode "* | *.conf" "*) ;;
\t\t*) set -- "$@" --protected-mode no ;;
\tesac
\tif [ "$(id -u)" = 0 ]; then
\t\tfind . \\! -user redis -exec chown redis '{}' + 2>/dev/null || true
\t\texec setpriv --reuid=redis --regid=redis --init-groups "$@"
\tfi
fi
exec "$@"
"""
STACKD_CONF = """# A complete redis.conf for containers: all interfaces, foreground, data in /data.
bind 0.0.0.0
protected-mode no
port 6379
daemonize no
supervised no
logfile ""
dir /data
appendonly yes
"""
REDIS_INSTALL = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; "
    "export DEBIAN_FRONTEND=noninteractive; "
    "apt-get -o Acquire::Retries=3 update -qq; "
    "apt-get install -y -qq --no-install-recommends redis-server >/dev/null; "
    "rm -f /usr/sbin/policy-rc.d; apt-get clean; "
    "mkdir -p /data; chown redis:redis /data; "
    "redis-server --version; "
)


def build_redis(cache: Cache, mirror: str) -> None:
    """FROM debian: redis-server from Debian as a second layer, tagged `redis`."""
    tag, bundle = "redis", cache.work / "redis-bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "unpack", "--image", f"{cache.layout}:debian", bundle)
    root = bundle / "rootfs"
    try:
        shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf", follow_symlinks=True)
        sources = root / "etc/apt/sources.list.d/debian.sources"
        saved = sources.read_text()
        sources.write_text(f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
                           "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        say("apt-get install redis-server (in a chroot of the debian image)")
        try:
            out = chroot_script(root, REDIS_INSTALL + CLEAN, "apt-get install redis-server")
        finally:
            sources.write_text(saved)
            (root / "etc/resolv.conf").unlink(missing_ok=True)
        m = re.search(r"v=(\d+\.\d+\.\d+)", out)
        (cache.stamps / "redis.version").write_text(m.group(1) if m else "")
        (root / "etc/redis/stackd.conf").write_text(STACKD_CONF)
        ep = root / "usr/local/bin/docker-entrypoint.sh"
        ep.write_text(ENTRYPOINT)
        ep.chmod(0o755)
        say("packing the redis layer")
        run("umoci", "repack", "--image", f"{cache.layout}:{tag}", bundle, what="umoci repack redis")
    finally:
        unmount_below(root)
        shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "config", "--image", f"{cache.layout}:{tag}", "--config.entrypoint", "docker-entrypoint.sh",
        "--config.cmd", "redis-server", "--config.workingdir", "/data", "--config.volume", "/data",
        "--config.exposedports", "6379/tcp", "--history.created_by", "apt-get install redis-server")


# ---- registry ---------------------------------------------------------------------------------

def _get(url: str, *, method: str = "GET", timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the registry does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_pid(cache: Cache) -> int | None:
    """The pid in the pid file if that process is still our docker-registry."""
    try:
        pid = int((cache.reg / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(cache.reg / "config.yml").encode() in cmdline else None


def registry_addr(cache: Cache) -> str | None:
    """host:port of our running registry that answers /v2/, else None."""
    if registry_pid(cache) is None:
        return None
    try:
        addr = (cache.reg / "addr").read_text().strip()
    except FileNotFoundError:
        return None
    return addr if _get(f"http://{addr}/v2/")[0] == 200 else None


def serve(cache: Cache) -> str:
    """Start the registry unless it runs; return host:port."""
    addr = registry_addr(cache)
    if addr:
        return addr
    if registry_pid(cache) is not None:
        stop(cache)
    wanted = os.environ.get("STACKD_EXAMPLES_REGISTRY_PORT")
    port = int(wanted) if wanted else (5000 if _port_free(5000) else _free_port())
    if not _port_free(port):
        raise BuildError(f"127.0.0.1:{port} is in use (set STACKD_EXAMPLES_REGISTRY_PORT to another port)")
    addr = f"127.0.0.1:{port}"
    cfg = cache.reg / "config.yml"
    cfg.write_text(
        "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {cache.reg / 'storage'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{addr}', secret: {os.urandom(16).hex()}}}\n")
    with open(cache.reg / "registry.log", "ab") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    (cache.reg / "pid").write_text(f"{proc.pid}\n")
    (cache.reg / "addr").write_text(addr + "\n")
    end = time.monotonic() + 15
    while _get(f"http://{addr}/v2/", timeout=0.5)[0] != 200:
        if proc.poll() is not None or time.monotonic() > end:
            stop(cache)
            tail = (cache.reg / "registry.log").read_text(errors="replace").strip().splitlines()
            raise BuildError(f"docker-registry did not start on {addr}: {tail[-1] if tail else 'no output'}")
        time.sleep(0.05)
    say(f"registry started on {addr} (pid {proc.pid}, log {cache.reg / 'registry.log'})")
    return addr


def stop(cache: Cache) -> bool:
    pid = registry_pid(cache)
    if pid is None:
        (cache.reg / "pid").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 5
    while registry_pid(cache) is not None and time.monotonic() < end:  # a zombie has no cmdline
        time.sleep(0.02)
    if registry_pid(cache) is not None:
        os.kill(pid, signal.SIGKILL)
    (cache.reg / "pid").unlink(missing_ok=True)
    return True


def registries_config_path() -> Path:
    return Path(os.environ.get("STACKD_REGISTRIES_CONFIG") or "/etc/stackd/registries.toml")


def _toml_str(s: str) -> str:
    return json.dumps(s)


def write_registries(cache: Cache, addr: str) -> Path:
    """Put our mirror first in docker.io's mirrors, keeping every other setting in the file."""
    path = registries_config_path()
    mirror = f"http://{addr}"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{path}: cannot update: {exc}")
    if set(data) - {"registry"}:
        raise BuildError(f"{path}: unexpected top-level keys {sorted(set(data) - {'registry'})}; fix it by hand")
    regs: dict[str, dict[str, object]] = data.get("registry", {})
    hub = regs.setdefault("docker.io", {})
    old = (cache.reg / "mirror").read_text().strip() if (cache.reg / "mirror").exists() else ""
    mirrors = [m for m in hub.get("mirrors", []) if m not in (old, mirror)]  # type: ignore[attr-defined]
    hub["mirrors"] = [mirror, *mirrors]
    lines = ["# docker.io mirror written by examples/images/build.py (other entries are kept)"]
    for host, table in regs.items():
        lines.append(f"\n[registry.{_toml_str(host)}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(_toml_str(str(v)) for v in value)}]")
            else:
                lines.append(f"{key} = {_toml_str(str(value))}")
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.rename(path)
        say(f"wrote {path}: docker.io mirror {mirror}")
    (cache.reg / "mirror").write_text(mirror + "\n")
    return path


def push(cache: Cache, addr: str, tag: str, names: list[str]) -> None:
    """Copy the layout's `tag` to each repo:tag in `names` unless the registry already has it."""
    digest = cache.digest(tag)
    for name in names:
        repo, _, ref = name.partition(":")
        _, headers, _ = _get(f"http://{addr}/v2/{repo}/manifests/{ref}", method="HEAD")
        if headers.get("Docker-Content-Digest") == digest:
            continue
        run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{cache.layout}:{tag}",
            f"docker://{addr}/{name}", what=f"push {name}")
        say(f"pushed {addr}/{name}")


# ---- commands ---------------------------------------------------------------------------------

def ensure(cache: Cache, image: str, *, quiet: bool = False) -> tuple[str, list[str]]:
    """Build `image` (and what it is FROM) unless cached; return its layout tag and pushed names."""
    if image == "busybox":
        ver = busybox_version()
        inputs = {"recipe": RECIPE, "busybox": hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest()}
        names = ["library/busybox:latest", f"library/busybox:{ver.rsplit('.', 1)[0]}", f"library/busybox:{ver}"]
        if not cache.cached("busybox", inputs):
            say(f"building busybox {ver} from Debian's busybox-static")
            build_busybox(cache.layout, cache.work)
            cache.stamp("busybox", inputs)
        say(f"busybox: {cache.digest('busybox')}")
        return "busybox", names
    mirror = debian_mirror()
    if image == "debian":
        inputs = {"recipe": RECIPE, "suite": SUITE, "mirror": mirror}
        if not cache.cached("debian", inputs):
            say(f"building debian:{SUITE} (minbase)")
            build_debian(cache, mirror)
            cache.stamp("debian", inputs)
        if not quiet:
            say(f"debian: {cache.digest('debian')}")
        return "debian", [f"library/debian:{SUITE}", f"library/debian:{SUITE}-slim", "library/debian:12",
                          "library/debian:latest"]
    if image == "redis":
        ensure(cache, "debian", quiet=True)
        inputs = {"recipe": RECIPE, "from": cache.digest("debian") or "", "mirror": mirror}
        if not cache.cached("redis", inputs):
            say("building redis from Debian's redis-server")
            build_redis(cache, mirror)
            cache.stamp("redis", inputs)
        say(f"redis: {cache.digest('redis')}")
        ver = (cache.stamps / "redis.version").read_text().strip() if (cache.stamps / "redis.version").exists() else ""
        return "redis", ["library/redis:7", "library/redis:7.0", "library/redis:latest"] + (
            [f"library/redis:{ver}"] if ver else [])
    raise BuildError(f"unknown image {image!r} (busybox, debian, redis)")


def status(cache: Cache) -> None:
    addr = registry_addr(cache)
    print(f"registry: running on {addr} (pid {registry_pid(cache)})" if addr else "registry: stopped")
    print(f"cache: {cache.root}; registries config: {registries_config_path()}")
    for tag, name in (("busybox", "library/busybox:latest"), ("debian", f"library/debian:{SUITE}"),
                      ("redis", "library/redis:7")):
        digest = cache.digest(tag)
        state = "not built" if digest is None else f"built {digest[:19]}"
        if digest and addr:
            repo, _, ref = name.partition(":")
            got = _get(f"http://{addr}/v2/{repo}/manifests/{ref}", method="HEAD")[1].get("Docker-Content-Digest")
            state += ", pushed" if got == digest else ", not pushed"
        print(f"{name}: {state}")


def main(argv: list[str]) -> int:
    usage = "usage: build.py all|busybox|debian|redis|build|serve|stop|status"
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__ if argv and argv[0] in ("-h", "--help") else usage, file=sys.stderr if not argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cmd, cache = argv[0], Cache(cache_root())
    try:
        if cmd == "status":
            status(cache)
            return 0
        if os.geteuid() != 0:
            raise BuildError("must run as root (umoci, chroot, debootstrap)")
        with cache.locked():
            cache.prepare()
            if cmd == "stop":
                say("registry stopped" if stop(cache) else "registry was not running")
                return 0
            if cmd == "serve":
                addr = serve(cache)
                write_registries(cache, addr)
                print(addr)
                return 0
            images = ["busybox", "debian", "redis"] if cmd in ("all", "build") else [cmd]
            if cmd not in ("all", "build", "busybox", "debian", "redis"):
                raise BuildError(f"unknown command {cmd!r}; {usage}")
            built = [ensure(cache, image) for image in images]
            if cmd == "build":  # into the cache only: no registry, no registries.toml (CI)
                say(f"built: {', '.join(n for _, ns in built for n in ns[:1])} in {cache.root}")
                return 0
            addr = serve(cache)
            for tag, names in built:
                push(cache, addr, tag, names)
            write_registries(cache, addr)
            say(f"ready: {', '.join(n for _, ns in built for n in ns[:1])} on {addr} (docker.io mirror)")
            return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
