"""A puller killed with SIGKILL mid-layer: the next pull resumes (HTTP Range) and the store verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stackd.engine.content import ContentStore
from stackd.engine.images import ImageStore
from stackd.engine.pull import Puller
from tests.engine.images.conftest import MemImage, mem_image, tar_layer

MiB = 1 << 20


class SlowRegistry(ThreadingHTTPServer):
    """Serves one image; the big blob stalls after `stall_after` bytes until `gate` is set."""

    daemon_threads = True

    def __init__(self, img: MemImage, big: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.img, self.big = img, big
        self.gate = threading.Event()
        self.stall_after = 2 * MiB
        self.ranges: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    server: SlowRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        if self.path == "/v2/":
            return self._send(200, b"{}", "application/json")
        if self.path.startswith("/v2/app/big/manifests/"):
            return self._send(200, srv.img.manifest, "application/vnd.docker.distribution.manifest.v2+json")
        digest = self.path.rsplit("/", 1)[1]
        data = srv.img.blobs.get(digest)
        if data is None:
            return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "application/json")
        if digest != srv.big:
            return self._send(200, data)
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not srv.gate.is_set():
            self.wfile.write(data[start : start + srv.stall_after])
            self.wfile.flush()
            srv.gate.wait(60)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def slow_registry() -> Iterator[SlowRegistry]:
    big = os.urandom(6 * MiB)
    img = mem_image([tar_layer({"small": b"x" * 100}), tar_layer({"big.bin": big})])
    srv = SlowRegistry(img, img.layer_digests[1])
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.gate.set()
        srv.shutdown()
        srv.server_close()


async def test_sigkill_mid_layer_then_resume(slow_registry: SlowRegistry, tmp_path: Path) -> None:
    ref = f"127.0.0.1:{slow_registry.server_address[1]}/app/big:1"
    code = f"import trio; from stackd.engine.pull import Puller; trio.run(Puller({str(tmp_path)!r}, unpack=False).pull, {ref!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    partial = ContentStore(tmp_path).ingest_dir / (slow_registry.big.removeprefix("sha256:") + ".partial")
    try:
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size >= MiB):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the puller never got half-way"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = ContentStore(tmp_path)
    assert not store.has(slow_registry.big)  # nothing half-written is visible
    assert ImageStore(tmp_path).list() == []
    done = partial.stat().st_size
    slow_registry.gate.set()
    rec = await Puller(tmp_path, unpack=False).pull(ref)
    assert slow_registry.ranges[-1] == f"bytes={done}-"
    assert store.has(slow_registry.big) and store.verify_all() == []
    assert not partial.exists()
    assert ImageStore(tmp_path).resolve(ref).id == rec.id
