"""Docker image references: parse, normalize (`busybox` → docker.io/library/busybox:latest), display."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackd.errors import EngineError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}\Z")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}\Z")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?\Z"
)


class ReferenceError(EngineError):
    """An image reference is malformed."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalized image reference: domain, repository path, and a tag and/or a digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository's full name: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def object(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def familiar_name(self) -> str:
        """The short repository name Docker shows: `busybox`, `user/app`, `host:5000/app`."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix("library/")
        return self.name

    def familiar(self) -> str:
        """The short form Docker prints: `busybox:latest`, `quay.io/x/y@sha256:…`."""
        out = self.familiar_name()
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def split_domain(name: str) -> tuple[str, str]:
    """Split a repository name into (domain, path) as Docker does, with docker.io defaults."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize a reference; add `latest` when it has neither tag nor digest."""
    raw = text.strip()
    if not raw:
        raise ReferenceError("invalid reference format: empty image name")
    if _SHA256.match(raw) is None and re.fullmatch(r"[a-f0-9]{64}", raw):
        raise ReferenceError(
            f"invalid reference format: {raw!r} is an image ID, not a repository name"
        )
    rest, _, digest = raw.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ReferenceError(f"invalid reference format: bad digest in {raw!r}")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError(f"invalid reference format: bad tag {tag!r} in {raw!r}")
    domain, path = split_domain(rest)
    if not _DOMAIN.match(domain):
        raise ReferenceError(f"invalid reference format: bad registry host {domain!r} in {raw!r}")
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            hint = " (repository names must be lowercase)" if component.lower() != component else ""
            raise ReferenceError(f"invalid reference format: {raw!r}{hint}")
    if len(domain) + 1 + len(path) > 255:
        raise ReferenceError(f"invalid reference format: repository name too long in {raw!r}")
    if tag is None and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest or None)


def familiar(text: str) -> str:
    """Shorten a normalized reference string for display; return it unchanged when unparsable."""
    try:
        return parse(text, default_tag=False).familiar()
    except ReferenceError:
        return text
