"""registries.toml: mirrors per registry, insecure (plain HTTP) registries, and CA files.

```toml
[registry."docker.io"]
mirrors = ["http://127.0.0.1:5000"]   # tried in order before the registry itself
[registry."myhost:5000"]
insecure = true                        # plain HTTP / unverified TLS allowed
ca = "/etc/stackd/certs/myhost.pem"    # extra CA bundle for TLS
```
Registries on localhost and 127.0.0.0/8 (and ::1) are insecure by default, as Docker allows.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from stackd.errors import EngineError

DEFAULT_PATH = Path("/etc/stackd/registries.toml")
ENV_PATH = "STACKD_REGISTRIES_CONFIG"
DOCKER_HUB_HOST = "registry-1.docker.io"


class RegistryConfigError(EngineError):
    """registries.toml is malformed."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send requests for a registry: base URLs to try (https first) and TLS settings."""

    host: str
    urls: tuple[str, ...]
    ca: str | None = None
    verify: bool = True
    mirror: bool = False


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    mirrors: tuple[str, ...] = ()
    insecure: bool = False
    ca: str | None = None


@dataclass(frozen=True)
class RegistryConfig:
    """The parsed registries.toml: settings keyed by registry host (`docker.io`, `h:5000`)."""

    registries: dict[str, RegistrySettings] = field(default_factory=dict)
    source: str = ""

    def settings(self, host: str) -> RegistrySettings:
        return self.registries.get(host, RegistrySettings())

    def is_insecure(self, host: str) -> bool:
        return self.settings(host).insecure or is_loopback(host)

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Mirrors first (in order), then the registry itself."""
        out = [self._endpoint(m, mirror=True) for m in self.settings(domain).mirrors]
        out.append(self._endpoint(DOCKER_HUB_HOST if domain == "docker.io" else domain, mirror=False))
        return out

    def _endpoint(self, location: str, *, mirror: bool) -> Endpoint:
        location = location.rstrip("/")
        scheme, sep, host = location.partition("://")
        if not sep:
            scheme, host = "", location
        settings = self.settings(host)
        insecure = self.is_insecure(host)
        if scheme:
            urls: tuple[str, ...] = (f"{scheme}://{host}",)
        elif insecure:
            urls = (f"https://{host}", f"http://{host}")
        else:
            urls = (f"https://{host}",)
        return Endpoint(host, urls, settings.ca, verify=not insecure or settings.ca is not None, mirror=mirror)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load(path: Path | str | None = None, environ: dict[str, str] | None = None) -> RegistryConfig:
    """Read registries.toml from `path`, else $STACKD_REGISTRIES_CONFIG, else /etc/stackd; absent → empty."""
    env = os.environ if environ is None else environ
    chosen = Path(path) if path is not None else Path(env.get(ENV_PATH) or DEFAULT_PATH)
    try:
        text = chosen.read_text()
    except FileNotFoundError:
        if path is not None:
            raise RegistryConfigError(f"{chosen}: registries config not found")
        return RegistryConfig(source=str(chosen))
    except OSError as exc:
        raise RegistryConfigError(f"{chosen}: cannot read registries config: {exc.strerror}")
    return parse(text, str(chosen))


def parse(text: str, source: str = "registries.toml") -> RegistryConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryConfigError(f"{source}: {exc}")
    regs = data.get("registry", {})
    if not isinstance(regs, dict):
        raise RegistryConfigError(f"{source}: [registry] must be a table of registry hosts")
    out: dict[str, RegistrySettings] = {}
    for host, table in regs.items():
        if not isinstance(table, dict):
            raise RegistryConfigError(f"{source}: registry.{host} must be a table")
        unknown = set(table) - {"mirrors", "insecure", "ca"}
        if unknown:
            raise RegistryConfigError(f"{source}: registry.{host}: unknown key {sorted(unknown)[0]!r}")
        mirrors = table.get("mirrors", [])
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise RegistryConfigError(f"{source}: registry.{host}.mirrors must be a list of strings")
        insecure = table.get("insecure", False)
        if not isinstance(insecure, bool):
            raise RegistryConfigError(f"{source}: registry.{host}.insecure must be true or false")
        ca = table.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise RegistryConfigError(f"{source}: registry.{host}.ca must be a file path")
        key = "docker.io" if host in ("index.docker.io", DOCKER_HUB_HOST) else host
        out[key] = RegistrySettings(tuple(mirrors), insecure, ca)
    return RegistryConfig(out, source)
