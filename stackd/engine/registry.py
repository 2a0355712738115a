"""Sans-IO core of the OCI distribution v2 pull protocol: requests, auth challenges, manifests."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stackd.engine.reference import Reference
from stackd.errors import NotFoundError, RegistryError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
LAYER_TYPES = frozenset(
    {
        DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_FOREIGN, OCI_LAYER_TAR, OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD, OCI_NONDIST, OCI_NONDIST + "+gzip", OCI_NONDIST + "+zstd",
    }
)
MAX_MANIFEST = 4 * 1024 * 1024


class RegistryNotFound(NotFoundError, RegistryError):
    """The registry does not have the repository, tag, digest or platform asked for."""


class _Model(BaseModel):
    # Registries add fields over time: accept and ignore them (lenient at this boundary).
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Platform(_Model):
    """An OCI platform: os/architecture[/variant]."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = Field(default=None, alias="os.version")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(_Model):
    """A content descriptor: media type, digest, size, and optional urls/platform."""

    media_type: str = Field(default="", alias="mediaType")
    digest: str = Field(pattern=r"^sha256:[a-f0-9]{64}$")
    size: int = Field(ge=0)
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    annotations: dict[str, str] | None = None


class Manifest(_Model):
    """An image manifest (Docker schema2 or OCI): a config and ordered layers."""

    schema_version: int = Field(alias="schemaVersion")
    media_type: str = Field(default="", alias="mediaType")
    config: Descriptor
    layers: tuple[Descriptor, ...]


class Index(_Model):
    """A manifest list (Docker) or image index (OCI): manifests per platform."""

    schema_version: int = Field(alias="schemaVersion")
    media_type: str = Field(default="", alias="mediaType")
    manifests: tuple[Descriptor, ...]


class _RootFS(_Model):
    type: str = "layers"
    diff_ids: tuple[str, ...] = ()


class ImageConfig(_Model):
    """The parts of an image config stackd reads (the rest stays in the stored blob)."""

    architecture: str = ""
    os: str = ""
    variant: str | None = None
    created: str | None = None
    rootfs: _RootFS
    config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed WWW-Authenticate challenge: scheme (`bearer`/`basic`) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request for the I/O driver to perform."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (or `arch`) into a Platform, normalizing common aliases."""
    parts = [p for p in text.strip().lower().split("/") if p]
    if not parts or len(parts) > 3:
        raise RegistryError(f"invalid platform {text!r}: expected os/arch[/variant]")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm"}.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else None
    if arch == "arm64" and variant == "v8":
        variant = None
    return Platform(os=parts[0], architecture=arch, variant=variant)


DEFAULT_PLATFORM = Platform(os="linux", architecture="amd64")


def manifest_request(base: str, ref: Reference, path: str | None = None, obj: str | None = None) -> Request:
    repo = path or ref.path
    return Request("GET", f"{base}/v2/{repo}/manifests/{obj or ref.object}", {"Accept": ACCEPT})


def blob_request(base: str, repo: str, digest: str, offset: int = 0) -> Request:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    return Request("GET", f"{base}/v2/{repo}/blobs/{digest}", headers)


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header value (one or more challenges) into Challenges."""
    out: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)\s*").match(text, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if not pm or pm.end() == pos:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def token_request(challenge: Challenge, scope: str, username: str | None, password: str | None) -> Request:
    """Build the token request for a Bearer challenge (GET realm?service&scope, Basic creds)."""
    realm = challenge.params.get("realm")
    if not realm:
        raise RegistryError("registry sent a Bearer challenge without a realm")
    params = {k: v for k, v in (("service", challenge.params.get("service", "")), ("scope", scope)) if v}
    headers = {}
    if username is not None and password is not None:
        params["account"] = username
        headers["Authorization"] = basic_header(username, password)
    return Request("GET", realm, headers, params)


def parse_token(body: bytes) -> str:
    """Extract the bearer token from a token server's JSON answer."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RegistryError("token server answered with invalid JSON")
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError("token server answered without a token")
    return token


def parse_manifest(body: bytes, content_type: str, where: str) -> Manifest | Index:
    """Parse a manifest or index by media type; refuse schema1 and unknown types clearly."""
    if len(body) > MAX_MANIFEST:
        raise RegistryError(f"{where}: manifest larger than {MAX_MANIFEST} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise RegistryError(f"{where}: registry returned invalid JSON for the manifest")
    if not isinstance(data, dict):
        raise RegistryError(f"{where}: registry returned a manifest that is not a JSON object")
    ctype = content_type.split(";")[0].strip().lower()
    media = data.get("mediaType") or ctype
    if media in SCHEMA1 or data.get("schemaVersion") == 1:
        raise RegistryError(
            f"{where}: Docker schema1 manifests are not supported (deprecated); "
            "push the image again with a current client"
        )
    if media not in (*MANIFEST_TYPES, *INDEX_TYPES) and "manifests" in data and ctype in ("", "application/json"):
        media = OCI_INDEX
    if media not in (*MANIFEST_TYPES, *INDEX_TYPES) and "config" in data and ctype in ("", "application/json"):
        media = OCI_MANIFEST
    kind: type[Manifest] | type[Index]
    if media in MANIFEST_TYPES:
        kind = Manifest
    elif media in INDEX_TYPES:
        kind = Index
    else:
        raise RegistryError(f"{where}: unsupported manifest media type {media!r}")
    try:
        parsed = kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise RegistryError(f"{where}: malformed manifest: {loc}: {first['msg']}")
    if isinstance(parsed, Manifest):
        for layer in parsed.layers:
            if layer.media_type not in LAYER_TYPES:
                raise RegistryError(f"{where}: unsupported layer media type {layer.media_type!r}")
    return parsed.model_copy(update={"media_type": media})


def parse_config(body: bytes, where: str) -> ImageConfig:
    try:
        return ImageConfig.model_validate_json(body)
    except ValidationError:
        raise RegistryError(f"{where}: malformed image config")


def _matches(p: Platform | None, want: Platform) -> bool:
    if p is None or p.os != want.os or p.architecture != want.architecture:
        return False
    if want.variant is None:
        return True
    have = p.variant or ("v8" if p.architecture == "arm64" else None)
    return have == want.variant


def select_platform(index: Index, want: Platform, where: str) -> Descriptor:
    """Choose the manifest for `want` from an index; never a different os/architecture."""
    candidates = [d for d in index.manifests if _matches(d.platform, want)]
    if not candidates:
        have = ", ".join(sorted({str(d.platform) for d in index.manifests if d.platform})) or "none"
        raise RegistryNotFound(f"{where}: no manifest for platform {want} (available: {have})")
    if want.variant is None:
        # Prefer the variant-less entry, then the highest variant (arm v7 over v6).
        candidates.sort(key=lambda d: (d.platform is not None and d.platform.variant is None, d.platform.variant if d.platform else ""), reverse=True)
    return candidates[0]


def error_message(status: int, body: bytes, what: str, registry: str) -> RegistryError:
    """Turn a failed response (status, errors[].code body) into one clear RegistryError."""
    codes: list[str] = []
    messages: list[str] = []
    try:
        data = json.loads(body)
        for err in data.get("errors") or []:
            codes.append(str(err.get("code", "")).upper())
            if err.get("message"):
                messages.append(str(err["message"]))
    except (ValueError, AttributeError, TypeError):
        pass
    detail = f" ({'; '.join(messages)})" if messages else ""
    not_found = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "TAG_INVALID"}
    if status == 404 or (codes and set(codes) <= not_found):
        return RegistryNotFound(f"{what}: not found in registry {registry}{detail}")
    if status == 401 or "UNAUTHORIZED" in codes:
        return RegistryError(f"{what}: unauthorized: authentication required by registry {registry}{detail}")
    if status == 403 or "DENIED" in codes:
        return RegistryError(f"{what}: denied: requested access to the resource is denied by registry {registry}{detail}")
    if status == 429 or "TOOMANYREQUESTS" in codes:
        return RegistryError(f"{what}: too many requests to registry {registry}{detail}")
    return RegistryError(f"{what}: registry {registry} answered HTTP {status}{detail}")


def layer_kind(media_type: str) -> Literal["gzip", "zstd", "tar"]:
    if media_type.endswith("zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "tar"
