"""Reference normalization as Docker does it, and the sans-IO registry protocol pieces."""

from __future__ import annotations

import json

import pytest

from stackd.engine import reference
from stackd.engine import registry as reg
from stackd.errors import NotFoundError, RegistryError

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/a/b:dev", "localhost:5000/a/b:dev", "localhost:5000/a/b:dev"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        ("quay.io/org/img@" + D, "quay.io/org/img@" + D, "quay.io/org/img@" + D),
        ("busybox:1@" + D, "docker.io/library/busybox:1@" + D, "busybox:1@" + D),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest", "Registry.Example.com/app:latest"),
    ],
)
def test_normalize(text: str, full: str, familiar: str) -> None:
    ref = reference.parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_object_is_digest_first() -> None:
    assert reference.parse("busybox:1@" + D).object == D
    assert reference.parse("busybox").object == "latest"


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "empty"), ("Busybox", "lowercase"), ("a/b:bad tag", "invalid"), ("busybox@sha256:xyz", "bad digest"),
     ("a" * 64, "image ID"), ("a//b", "invalid"), ("-a/b", "invalid")],
)
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(reference.ReferenceError, match=why):
        reference.parse(text)


def test_challenges() -> None:
    [ch] = reg.parse_challenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"')
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/busybox:pull"}
    both = reg.parse_challenges('Basic realm="basic-realm", Bearer realm="x",error="invalid_token"')
    assert [c.scheme for c in both] == ["basic", "bearer"] and both[1].params["error"] == "invalid_token"
    req = reg.token_request(ch, "repository:a/b:pull", "u", "p")
    assert req.params == {"service": "registry.docker.io", "scope": "repository:a/b:pull", "account": "u"}
    assert req.headers["Authorization"] == "Basic dTpw"
    assert reg.parse_token(b'{"access_token": "t1"}') == "t1"
    with pytest.raises(RegistryError, match="without a token"):
        reg.parse_token(b"{}")


def index(*plats: dict[str, str]) -> reg.Index:
    body = json.dumps({"schemaVersion": 2, "mediaType": reg.OCI_INDEX, "manifests": [
        {"mediaType": reg.OCI_MANIFEST, "digest": "sha256:" + f"{i:x}" * 64, "size": 10, "platform": p}
        for i, p in enumerate(plats, start=1)]}).encode()
    parsed = reg.parse_manifest(body, reg.OCI_INDEX, "x")
    assert isinstance(parsed, reg.Index)
    return parsed


def test_platform_selection() -> None:
    idx = index({"os": "linux", "architecture": "arm", "variant": "v6"}, {"os": "linux", "architecture": "arm", "variant": "v7"},
                {"os": "linux", "architecture": "arm64", "variant": "v8"}, {"os": "linux", "architecture": "amd64"},
                {"os": "windows", "architecture": "amd64"})
    pick = lambda s: reg.select_platform(idx, reg.parse_platform(s), "x").platform  # noqa: E731
    assert str(pick("linux/amd64")) == "linux/amd64"
    assert str(pick("linux/arm/v6")) == "linux/arm/v6"
    assert str(pick("linux/arm")) == "linux/arm/v7"
    assert str(pick("linux/arm64")) == "linux/arm64/v8" == str(pick("aarch64"))
    with pytest.raises(NotFoundError, match="no manifest for platform linux/ppc64le"):
        pick("linux/ppc64le")
    with pytest.raises(RegistryError, match="invalid platform"):
        reg.parse_platform("a/b/c/d")


def test_manifest_parsing_is_lenient_with_extra_fields_and_strict_with_types() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": reg.DOCKER_MANIFEST, "newField": 1,
                       "config": {"mediaType": reg.DOCKER_CONFIG, "digest": D, "size": 3, "extra": True},
                       "layers": [{"mediaType": reg.DOCKER_FOREIGN, "digest": D, "size": 9, "urls": ["https://x/y"]}]}).encode()
    m = reg.parse_manifest(body, "", "x")
    assert isinstance(m, reg.Manifest) and m.layers[0].urls == ("https://x/y",)
    bad = json.loads(body)
    bad["layers"][0]["mediaType"] = "application/x-foo"
    with pytest.raises(RegistryError, match="unsupported layer media type 'application/x-foo'"):
        reg.parse_manifest(json.dumps(bad).encode(), "", "x")
    bad["layers"][0] = {"mediaType": reg.OCI_LAYER_GZIP, "digest": "md5:abc", "size": 1}
    with pytest.raises(RegistryError, match=r"malformed manifest: layers\.0\.digest"):
        reg.parse_manifest(json.dumps(bad).encode(), "", "x")


@pytest.mark.parametrize(
    ("status", "body", "cls", "text"),
    [
        (404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}', NotFoundError, "r: not found in registry h (manifest unknown)"),
        (401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', RegistryError, "r: unauthorized: authentication required by registry h"),
        (403, b"", RegistryError, "r: denied"),
        (429, b"", RegistryError, "r: too many requests"),
        (500, b"<html>", RegistryError, "r: registry h answered HTTP 500"),
    ],
)
def test_error_messages(status: int, body: bytes, cls: type[Exception], text: str) -> None:
    err = reg.error_message(status, body, "r", "h")
    assert isinstance(err, cls) and str(err).startswith(text)
