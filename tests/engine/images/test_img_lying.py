"""Registries that lie or fail (httpx MockTransport): rejected, nothing committed, store consistent."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stackd.engine.content import ContentStore
from stackd.engine.images import ImageStore
from stackd.engine.pull import Puller
from stackd.errors import NotFoundError, RegistryError
from tests.engine.images.conftest import MemImage, mem_image, tar_layer

HOST = "registry.test"
REF = f"{HOST}/app/web:1"


class _Stream(httpx.AsyncByteStream):
    """A response body streamed in small chunks, as a network would deliver it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for i in range(0, len(self.data), 4096):
            yield self.data[i : i + 4096]


def R(status: int, content: bytes = b"", headers: dict[str, str] | None = None, json_body: object = None) -> httpx.Response:
    if json_body is not None:
        content = json.dumps(json_body).encode()
    hdrs = {"Content-Length": str(len(content)), **(headers or {})}
    return httpx.Response(status, headers=hdrs, stream=_Stream(content))


Handler = Callable[[httpx.Request], httpx.Response | None]


def image() -> MemImage:
    return mem_image([tar_layer({"a.txt": b"a" * 5000}), tar_layer({"b.bin": bytes(range(256)) * 400})])


class FakeRegistry:
    """Serves one image at app/web:1; `override` may answer a request first (to lie)."""

    def __init__(self, img: MemImage, override: Handler | None = None, token: bool = False) -> None:
        self.img, self.override, self.token = img, override, token
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None and (resp := self.override(request)) is not None:
            return resp
        path = request.url.path
        if self.token and request.url.host == HOST and request.headers.get("authorization") != "Bearer tok-1":
            return R(401, headers={"WWW-Authenticate": f'Bearer realm="https://auth.test/token",service="{HOST}"'})
        if request.url.host == "auth.test":
            return R(200, json_body={"token": "tok-1"})
        if path == "/v2/":
            return R(200)
        if path == "/v2/app/web/manifests/1" or path == f"/v2/app/web/manifests/{self.img.digest}":
            return R(200, self.img.manifest, headers={
                "Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        if path.startswith("/v2/app/web/blobs/"):
            digest = path.rsplit("/", 1)[1]
            if digest not in self.img.blobs:
                return R(404, json_body={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
            data = self.img.blobs[digest]
            rng = request.headers.get("range")
            if rng:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                return R(206, data[start:])
            return R(200, data)
        return R(404, json_body={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]})


def make_puller(root: Path, fake: FakeRegistry) -> Puller:
    return Puller(root, transport=httpx.MockTransport(fake), backoff=0.001, retries=2)


def assert_nothing_committed(root: Path, img: MemImage, bad: str | None = None) -> None:
    """No image recorded; the lying blob never committed (verified siblings may be, for reuse)."""
    store = ContentStore(root)
    assert store.verify_all() == []
    assert ImageStore(root).list() == []
    assert img.digest not in store.list()
    if bad is not None:
        assert not store.has(bad)
    ImageStore(root).prune()
    assert store.list() == []


async def test_fake_registry_pulls_with_bearer_token(tmp_path: Path) -> None:
    img = image()
    fake = FakeRegistry(img, token=True)
    rec = await make_puller(tmp_path, fake).pull(REF)
    assert rec.manifest_digest == img.digest
    assert ContentStore(tmp_path).verify_all() == []
    token_req = next(r for r in fake.requests if r.url.host == "auth.test")
    assert token_req.url.params["scope"] == "repository:app/web:pull"
    assert token_req.url.params["service"] == HOST


async def test_layer_digest_mismatch_is_rejected(tmp_path: Path) -> None:
    img = image()
    bad = img.layer_digests[1]

    def lie(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(bad):
            data = bytearray(img.blobs[bad])
            data[-20] ^= 0xFF
            return R(200, bytes(data))
        return None

    with pytest.raises(RegistryError, match=f"digest mismatch: expected {bad}"):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert_nothing_committed(tmp_path, img, locals().get("bad"))


async def test_wrong_size_is_rejected(tmp_path: Path) -> None:
    img = image()
    bad = img.layer_digests[0]

    def lie(req: httpx.Request) -> httpx.Response | None:
        return R(200, img.blobs[bad] + b"extra") if req.url.path.endswith(bad) else None

    with pytest.raises(RegistryError, match="size mismatch"):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert_nothing_committed(tmp_path, img, locals().get("bad"))


async def test_truncated_stream_is_rejected_after_retries(tmp_path: Path) -> None:
    img = image()
    bad = img.layer_digests[1]

    def lie(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(bad):
            return R(200, img.blobs[bad][:100], headers={"Content-Length": str(len(img.blobs[bad]))})
        return None

    with pytest.raises(RegistryError, match="stream ended after"):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert_nothing_committed(tmp_path, img, locals().get("bad"))


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"{not json", "application/vnd.docker.distribution.manifest.v2+json", "invalid JSON"),
        (json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.example.weird+json", "config": {}}).encode(),
         "application/vnd.example.weird+json", "unsupported manifest media type 'application/vnd.example.weird+json'"),
        (json.dumps({"schemaVersion": 1, "name": "app/web", "fsLayers": []}).encode(),
         "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema1 manifests are not supported"),
        (json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}).encode(),
         "application/vnd.oci.image.manifest.v1+json", "malformed manifest: config"),
    ],
)
async def test_bad_manifests_are_rejected(tmp_path: Path, body: bytes, ctype: str, message: str) -> None:
    img = image()

    def lie(req: httpx.Request) -> httpx.Response | None:
        return R(200, body, headers={"Content-Type": ctype}) if "/manifests/" in req.url.path else None

    with pytest.raises(RegistryError, match=re.escape(message)):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert_nothing_committed(tmp_path, img, locals().get("bad"))


async def test_manifest_digest_header_mismatch_is_rejected(tmp_path: Path) -> None:
    img = image()
    wrong = "sha256:" + "0" * 64

    def lie(req: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in req.url.path:
            return R(200, img.manifest, headers={
                "Content-Type": "application/vnd.docker.distribution.manifest.v2+json", "Docker-Content-Digest": wrong})
        return None

    with pytest.raises(RegistryError, match="manifest digest mismatch"):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert_nothing_committed(tmp_path, img, locals().get("bad"))


async def test_unknown_repository_names_reference_and_registry(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=rf"{HOST}/other/x:2: not found in registry {HOST} \(repository name not known\)"):
        await make_puller(tmp_path, FakeRegistry(image())).pull(f"{HOST}/other/x:2")


async def test_transient_errors_retry_and_redirects_drop_credentials(tmp_path: Path) -> None:
    img = image()
    seen = {"503": 0}
    layer = img.layer_digests[0]

    def flaky(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "cdn.test":
            assert "authorization" not in req.headers
            return R(200, img.blobs[layer])
        if req.url.path.endswith(layer):
            if seen["503"] == 0:
                seen["503"] += 1
                return R(503)
            return R(307, headers={"Location": f"https://cdn.test/blob/{layer}"})
        return None

    rec = await make_puller(tmp_path, FakeRegistry(img, flaky, token=True)).pull(REF)
    assert rec.layers[0].digest == layer and seen["503"] == 1
    assert ContentStore(tmp_path).verify_all() == []


async def test_partial_download_resumes_with_range(tmp_path: Path) -> None:
    img = image()
    layer = img.layer_digests[1]
    store = ContentStore(tmp_path)
    (store.ingest_dir / f"{layer.removeprefix('sha256:')}.partial").write_bytes(img.blobs[layer][:1000])
    fake = FakeRegistry(img)
    await make_puller(tmp_path, fake).pull(REF)
    ranges = [r.headers.get("range") for r in fake.requests if r.url.path.endswith(layer)]
    assert ranges == ["bytes=1000-"]
    assert store.verify_all() == [] and store.has(layer)


async def test_foreign_layer_falls_back_to_its_urls(tmp_path: Path) -> None:
    img = image()
    foreign = img.layer_digests[0]
    man = json.loads(img.manifest)
    man["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    man["layers"][0]["urls"] = [f"https://files.test/{foreign}"]
    img.manifest = json.dumps(man).encode()

    def foreign_only(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "files.test":
            return R(200, img.blobs[foreign])
        if req.url.path.endswith(foreign):
            return R(404, json_body={"errors": [{"code": "BLOB_UNKNOWN"}]})
        return None

    rec = await make_puller(tmp_path, FakeRegistry(img, foreign_only)).pull(REF)
    assert rec.layers[0].media_type.endswith("foreign.diff.tar.gzip")
    assert ContentStore(tmp_path).has(foreign)
