"""examples/images/build.py: cached builds, its registry as the docker.io mirror, stackd pulling through it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.cli import main
from stackd.engine.registry_config import load as load_registries
from tests.e2e.images_fixture import (  # noqa: F401 (fixtures)
    BUILD_PY,
    DockerMirror,
    busybox_mirror,
    busybox_mirror_env,
    example_mirror,
)
from tests.engine.images.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (umoci, chroot)")


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cache = tmp / "cache"
        self.registries = tmp / "etc" / "registries.toml"
        self.port = free_port()
        self.vars = {**os.environ, "STACKD_EXAMPLES_CACHE": str(self.cache),
                     "STACKD_REGISTRIES_CONFIG": str(self.registries),
                     "STACKD_EXAMPLES_REGISTRY_PORT": str(self.port)}

    def build(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, str(BUILD_PY), *args], env=self.vars, capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def pid(self) -> int | None:
        f = self.cache / "registry" / "pid"
        return int(f.read_text()) if f.exists() else None


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = Env(tmp_path)
    monkeypatch.setenv("STACKD_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("STACKD_REGISTRIES_CONFIG", str(e.registries))
    monkeypatch.setenv("STACKD_AUTH_CONFIG", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    yield e
    pid = e.pid()
    e.build("stop", check=False)
    if pid is not None:
        assert not _alive(pid), "build.py stop left the registry running"


def _alive(pid: int) -> bool:
    try:
        return b"docker-registry" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def pull(capsys: pytest.CaptureFixture[str], name: str) -> tuple[str, dict[str, object]]:
    """`stackd image pull NAME` in-process; return its output and the image's inspect record."""
    capsys.readouterr()
    code = main(["image", "pull", name])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert main(["image", "inspect", name]) == 0
    [record] = json.loads(capsys.readouterr()[0])
    return out, record


def snapshot_fs(state: Path, record: dict[str, object]) -> list[Path]:
    """The unpacked layer directories of an image, bottom first."""
    from stackd.engine.images import chain_ids

    diff_ids = [la["DiffId"] for la in record["Layers"]]  # type: ignore[attr-defined]
    return [state / "snapshots" / "layers" / c.split(":", 1)[1] / "fs" for c in chain_ids(diff_ids)]


def test_busybox_build_serve_pull(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.registries.parent.mkdir(parents=True)
    env.registries.write_text('[registry."docker.io"]\nmirrors = ["http://mirror.example:5000"]\n\n'
                              '[registry."myhost:5000"]\ninsecure = true\n')
    t0 = time.monotonic()
    first = env.build("busybox")
    cold = time.monotonic() - t0
    assert "building busybox" in first.stdout and f"pushed 127.0.0.1:{env.port}/library/busybox:latest" in first.stdout
    assert first.stdout.rstrip().endswith(f"on 127.0.0.1:{env.port} (docker.io mirror)")
    again = env.build("busybox")
    assert "building" not in again.stdout and "pushed" not in again.stdout, again.stdout  # cached, already pushed
    assert cold < 10

    cfg = load_registries(env.registries)
    assert cfg.settings("docker.io").mirrors == (f"http://127.0.0.1:{env.port}", "http://mirror.example:5000")
    assert cfg.settings("myhost:5000").insecure
    assert env.build("serve").stdout.splitlines()[-1] == f"127.0.0.1:{env.port}"
    status = env.build("status").stdout
    assert f"registry: running on 127.0.0.1:{env.port}" in status
    assert "library/busybox:latest: built sha256:" in status and ", pushed" in status
    assert "library/redis:7: not built" in status

    out, record = pull(capsys, "busybox")
    stamp = json.loads((env.cache / "stamps" / "busybox.json").read_text())
    assert f"Digest: {stamp['digest']}" in out
    assert record["Config"] == {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                "Cmd": ["sh"]}
    _, versioned = pull(capsys, "busybox:1.35")
    assert versioned["Id"] == record["Id"]
    [fs] = snapshot_fs(Path(os.environ["STACKD_STATE_ROOT"]), record)
    assert os.readlink(fs / "bin" / "sh") == "busybox" and os.readlink(fs / "bin" / "httpd") == "busybox"
    assert (fs / "tmp").stat().st_mode & 0o7777 == 0o1777 and (fs / "var" / "www").is_dir()
    ran = subprocess.run(["/usr/sbin/chroot", str(fs), "/bin/sh", "-c", "true && id -un && id -u nobody && echo $PATH"],
                         capture_output=True, text=True, env={"PATH": "/bin"})
    assert ran.returncode == 0 and ran.stdout.split() == ["root", "65534", "/bin"], ran.stderr

    pid = env.pid()
    assert pid is not None and _alive(pid)
    assert "registry stopped" in env.build("stop").stdout
    assert not _alive(pid)
    assert "registry: stopped" in env.build("status").stdout


def test_errors_are_one_line(env: Env) -> None:
    bad = env.build("nosuch", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("build.py: error: unknown command 'nosuch'")
    assert env.build(check=False).returncode == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", env.port))
        s.listen()
        busy = env.build("serve", check=False)
    assert busy.returncode == 1 and busy.stderr == (
        f"build.py: error: 127.0.0.1:{env.port} is in use (set STACKD_EXAMPLES_REGISTRY_PORT to another port)\n")
    assert env.pid() is None


def test_busybox_mirror_fixture(busybox_mirror_env: DockerMirror, tmp_path: Path,  # noqa: F811 (fixture)
                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STACKD_STATE_ROOT", str(tmp_path / "state"))
    out, record = pull(capsys, "busybox")
    assert f"Digest: {busybox_mirror_env.digest}" in out
    [fs] = snapshot_fs(tmp_path / "state", record)
    assert (fs / "bin" / "busybox").is_file() and os.readlink(fs / "bin" / "sh") == "busybox"
    assert busybox_mirror_env.registry.proc.poll() is None


@pytest.mark.skipif(os.environ.get("STACKD_SLOW_TESTS") != "1", reason="slow (debootstrap): set STACKD_SLOW_TESTS=1")
@pytest.mark.timeout(1800)
def test_all_images_redis_serves(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    built = env.build("all", timeout=1700)
    with capsys.disabled():
        print(f"\nbuild.py all: {time.monotonic() - t0:.0f}s")
    assert "pushed" in built.stdout
    t1 = time.monotonic()
    assert "building" not in env.build("all").stdout
    assert time.monotonic() - t1 < 10

    state = Path(os.environ["STACKD_STATE_ROOT"])
    _, debian = pull(capsys, "debian:bookworm")
    [dfs] = snapshot_fs(state, debian)
    assert (dfs / "usr/bin/apt-get").exists() and not list((dfs / "var/lib/apt/lists").glob("*_Packages*"))
    assert not list((dfs / "dev").iterdir()) and not (dfs / "etc/resolv.conf").exists()
    _, redis = pull(capsys, "redis:7")
    cfg = redis["Config"]
    assert cfg["Entrypoint"] == ["docker-entrypoint.sh"] and cfg["Cmd"] == ["redis-server"]  # type: ignore[index]
    assert cfg["ExposedPorts"] == {"6379/tcp": {}} and cfg["Volumes"] == {"/data": {}}  # type: ignore[index]
    assert cfg["WorkingDir"] == "/data"  # type: ignore[index]
    lower, upper = snapshot_fs(state, redis)
    assert lower == dfs and (upper / "usr/bin/redis-server").exists()

    # Run the image's entrypoint on the pulled layers (overlay in a private mount namespace).
    merged, rw, work, port = tmp_path / "merged", tmp_path / "upper", tmp_path / "work", free_port()
    for d in (merged, rw, work):
        d.mkdir()
    script = (f"mount -t overlay overlay -o lowerdir={upper}:{lower},upperdir={rw},workdir={work} {merged} && "
              f"mount -t proc proc {merged}/proc && cd {merged}/data && exec chroot {merged} "
              f"/bin/sh -c 'cd /data && exec docker-entrypoint.sh redis-server --port {port}'")
    # Every step execs, so proc.pid ends up being redis-server itself (setpriv would drop a pdeathsig).
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        reply = b""
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"SET k v\r\nGET k\r\nCONFIG GET protected-mode\r\nSAVE\r\n")
                    while reply.count(b"+OK\r\n") < 2 and (chunk := s.recv(4096)):
                        reply += chunk
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                time.sleep(0.1)
        assert reply.startswith(b"+OK\r\n$1\r\nv\r\n") and b"protected-mode\r\n$2\r\nno\r\n+OK" in reply, reply
        uid = next(line.split(":")[2] for line in (upper / "etc/passwd").read_text().splitlines()
                   if line.startswith("redis:"))
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{uid}\t" in status and "Name:\tredis-server" in status  # privileges dropped
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (rw / "data" / "dump.rdb").is_file()  # redis (not root) could write /data


def test_example_mirror_serves_redis(example_mirror: DockerMirror, tmp_path: Path,  # noqa: F811 (fixture)
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STACKD_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("STACKD_REGISTRIES_CONFIG", str(example_mirror.registries_config))
    assert "library/redis:7" in example_mirror.names
    _, record = pull(capsys, "redis:7")
    assert record["Config"]["Entrypoint"] == ["docker-entrypoint.sh"]  # type: ignore[index]
    assert len(record["Layers"]) == 2  # type: ignore[arg-type]
