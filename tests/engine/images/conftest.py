"""Shared fixtures for image tests: real docker-registry processes, test images, fake registries."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

BUSYBOX = "/bin/busybox"
USER, PASSWORD = "alice", "s3cret-pw-7731"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*cmd: str | Path, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, input=input, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"registry did not listen on {port}")


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    scheme: str = "http"
    ca: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"


def start_registry(workdir: Path, storage: Path, *, tls: tuple[Path, Path] | None = None, auth: str = "") -> Registry:
    port = free_port()
    cfg = workdir / f"config-{port}.yml"
    text = (
        "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if tls:
        text += f"  tls: {{certificate: {tls[0]}, key: {tls[1]}}}\n"
    text += auth
    cfg.write_text(text)
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Registry(f"127.0.0.1:{port}", proc, "https" if tls else "http")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _umoci_layer(layout: Path, tag: str, bundle: Path) -> None:
    run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{tag}", bundle)


def build_layout(work: Path) -> Path:
    """An OCI layout with tags base (3 layers, whiteouts), amd/arm (platform variants), multi (index)."""
    layout = work / "layout"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:base")
    bundle = work / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:base", bundle)
    root = bundle / "rootfs"
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for name in ("sh", "ls", "cat", "true"):
        (root / "bin" / name).symlink_to("busybox")
    _umoci_layer(layout, "base", bundle)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "hello").write_text("hello from layer 2\n")
    (root / "data").mkdir()
    (root / "data" / "gone").write_text("deleted in layer 3\n")
    (root / "data" / "kept").write_text("kept\n")
    _umoci_layer(layout, "base", bundle)
    (root / "data" / "gone").unlink()
    (root / "etc" / "hello").write_text("hello from layer 3\n")
    _umoci_layer(layout, "base", bundle)
    run("umoci", "config", "--image", f"{layout}:base", "--config.cmd", "/bin/sh", "--os", "linux", "--architecture", "amd64")
    shutil.rmtree(bundle)
    for tag, arch in (("amd", "amd64"), ("arm", "arm64")):
        b = work / f"bundle-{tag}"
        run("umoci", "unpack", "--image", f"{layout}:base", b)
        (b / "rootfs" / "arch").write_text(arch + "\n")
        run("umoci", "repack", "--image", f"{layout}:{tag}", b)
        run("umoci", "config", "--image", f"{layout}:{tag}", "--architecture", arch, "--os", "linux")
        shutil.rmtree(b)
    index = json.loads((layout / "index.json").read_text())
    entries = []
    for m in index["manifests"]:
        name = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if name in ("amd", "arm"):
            entries.append({**{k: v for k, v in m.items() if k != "annotations"},
                            "platform": {"os": "linux", "architecture": "amd64" if name == "amd" else "arm64"}})
    blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}).encode()
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(blob)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                               "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--src-tls-verify=false", *extra, src, dest)


@dataclass
class World:
    """Everything session-wide: the image layout, the registry storage and the plain registry."""

    work: Path
    layout: Path
    storage: Path
    plain: Registry
    digests: dict[str, str] = field(default_factory=dict)  # name → manifest digest (by skopeo)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("img-world")
    layout = build_layout(work)
    storage = work / "storage"
    storage.mkdir()
    plain = start_registry(work, storage)
    try:
        w = World(work, layout, storage, plain)
        dest = f"docker://{plain.host}"
        skopeo_copy(f"oci:{layout}:base", f"{dest}/test/busybox:latest", "--format", "v2s2")
        skopeo_copy(f"oci:{layout}:base", f"{dest}/library/busybox:latest", "--format", "v2s2")
        skopeo_copy(f"oci:{layout}:base", f"{dest}/test/busybox:oci", "--format", "oci")
        zlayout = work / "zstd-layout"
        run("skopeo", "copy", "--quiet", "--dest-compress-format", "zstd", f"oci:{layout}:base", f"oci:{zlayout}:base")
        skopeo_copy(f"oci:{zlayout}:base", f"{dest}/test/zstd:latest", "--format", "oci", "--dest-compress-format", "zstd")
        skopeo_copy(f"oci:{layout}:multi", f"{dest}/test/multi:latest", "--all")
        for tag in ("amd", "arm"):
            idx = json.loads((layout / "index.json").read_text())
            for m in idx["manifests"]:
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                    w.digests[tag] = m["digest"]
        yield w
    finally:
        stop(plain.proc)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_registry(world: World) -> Iterator[Registry]:
    d = world.work / "tls"
    d.mkdir(exist_ok=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem",
        "-days", "2", "-subj", "/CN=stackd test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "srv.key", "-out", d / "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", d / "srv.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-CAcreateserial",
        "-out", d / "srv.pem", "-days", "2", "-extfile", d / "ext.cnf")
    reg = start_registry(d, world.storage, tls=(d / "srv.pem", d / "srv.key"))
    reg.ca = d / "ca.pem"
    yield reg
    stop(reg.proc)


@pytest.fixture(scope="session")
def basic_registry(world: World) -> Iterator[Registry]:
    d = world.work / "basic"
    d.mkdir(exist_ok=True)
    (d / "htpasswd").write_bytes(run("htpasswd", "-Bbn", USER, PASSWORD))
    reg = start_registry(d, world.storage, auth=f"auth:\n  htpasswd: {{realm: basic-realm, path: {d / 'htpasswd'}}}\n")
    yield reg
    stop(reg.proc)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer(ThreadingHTTPServer):
    """A tiny Bearer token server: checks Basic credentials (or anonymous), signs RS256 JWTs."""

    def __init__(self, key: Path, cert_der: bytes, allow_anonymous: bool) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.key, self.cert_der, self.allow_anonymous = key, cert_der, allow_anonymous
        self.requests: list[dict[str, list[str]]] = []

    def sign(self, service: str, scope: str, subject: str) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        now = int(time.time())
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {"iss": "stackd-test-issuer", "sub": subject, "aud": service, "exp": now + 600, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = run("openssl", "dgst", "-sha256", "-sign", self.key, input=signing_input.encode())
        return f"{signing_input}.{_b64url(sig)}"


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenIssuer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        q = parse_qs(urlparse(self.path).query)
        self.server.requests.append(q)
        auth = self.headers.get("Authorization", "")
        subject = ""
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, pw) != (USER, PASSWORD):
                self.send_response(401)
                self.end_headers()
                return
            subject = user
        elif not self.server.allow_anonymous:
            self.send_response(401)
            self.end_headers()
            return
        token = self.server.sign(q.get("service", [""])[0], q.get("scope", [""])[0], subject)
        body = json.dumps({"token": token, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def token_registry(world: World) -> Iterator[tuple[Registry, TokenIssuer]]:
    d = world.work / "token"
    d.mkdir(exist_ok=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "tok.key", "-out", d / "tok.pem",
        "-days", "2", "-subj", "/CN=stackd token issuer")
    der = run("openssl", "x509", "-in", d / "tok.pem", "-outform", "DER")
    issuer = TokenIssuer(d / "tok.key", der, allow_anonymous=False)
    thread = threading.Thread(target=issuer.serve_forever, daemon=True)
    thread.start()
    auth = (
        "auth:\n  token:\n"
        f"    realm: http://127.0.0.1:{issuer.server_address[1]}/token\n"
        "    service: stackd-test-registry\n    issuer: stackd-test-issuer\n"
        f"    rootcertbundle: {d / 'tok.pem'}\n"
    )
    try:
        reg = start_registry(d, world.storage, auth=auth)
    except BaseException:
        issuer.shutdown()
        raise
    yield reg, issuer
    stop(reg.proc)
    issuer.shutdown()
    issuer.server_close()


# ---- in-memory images for fake registries -------------------------------------------------

def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class MemImage:
    manifest: bytes
    config: bytes
    blobs: dict[str, bytes]
    layer_digests: list[str]

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def mem_image(layers: list[bytes], media_type: str = "application/vnd.docker.distribution.manifest.v2+json") -> MemImage:
    gz = [gzip.compress(x, compresslevel=1, mtime=0) for x in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha(g), "size": len(g)} for g in gz],
    }).encode()
    blobs = {sha(config): config, **{sha(g): g for g in gz}}
    return MemImage(manifest, config, blobs, [sha(g) for g in gz])
