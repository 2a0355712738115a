"""Registry credentials: stackd's own login file, ~/.docker/config.json auths and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stackd.errors import EngineError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
ENV_AUTH_FILE = "STACKD_AUTH_CONFIG"


class AuthError(EngineError):
    """Credentials could not be read or stored."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret (password, or identity token when username is `<token>`)."""

    username: str
    secret: str

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(username={self.username!r}, secret=***)"


def server_key(host: str) -> str:
    """The key Docker uses in config.json for a registry host."""
    return DOCKER_HUB_KEY if host in ("docker.io", "index.docker.io", "registry-1.docker.io") else host


def _norm(key: str) -> str:
    key = key.removeprefix("https://").removeprefix("http://")
    key = key.split("/", 1)[0]
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def default_auth_file(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV_AUTH_FILE):
        return Path(env[ENV_AUTH_FILE])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/root"), ".config")
    return Path(base) / "stackd" / "auth.json"


def default_docker_config(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME", "/root"), ".docker")
    return Path(base) / "config.json"


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthError(f"{path}: cannot read credentials file: {exc}")
    return data if isinstance(data, dict) else {}


def _decode_auths(auths: object, host: str, source: Path) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _norm(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"{source}: malformed auth entry for {key}")
            return Credentials(user, secret)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def helper_get(helper: str, server: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` for a server's credentials (None if it has none)."""
    try:
        proc = subprocess.run(
            [f"docker-credential-{helper}", "get"], input=server.encode(), capture_output=True, timeout=30
        )
    except FileNotFoundError:
        raise AuthError(f"credential helper docker-credential-{helper} not found in PATH")
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper docker-credential-{helper} timed out")
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout.lower() + proc.stderr.lower():
            return None
        raise AuthError(f"credential helper docker-credential-{helper} failed (exit {proc.returncode})")
    try:
        data = json.loads(proc.stdout)
        return Credentials(str(data["Username"]), str(data["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper docker-credential-{helper} returned malformed output")


@dataclass(frozen=True)
class AuthConfig:
    """Where credentials come from: stackd's login file first, then Docker's config.json."""

    auth_file: Path
    docker_config: Path | None

    @classmethod
    def default(cls, environ: dict[str, str] | None = None) -> AuthConfig:
        return cls(default_auth_file(environ), default_docker_config(environ))

    def lookup(self, host: str) -> Credentials | None:
        host = _norm(host)
        found = _decode_auths(_read_json(self.auth_file).get("auths"), host, self.auth_file)
        if found is not None or self.docker_config is None:
            return found
        cfg = _read_json(self.docker_config)
        helpers = cfg.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _norm(key) == host and isinstance(helper, str):
                    return helper_get(helper, server_key(host))
        found = _decode_auths(cfg.get("auths"), host, self.docker_config)
        if found is None and isinstance(cfg.get("credsStore"), str):
            return helper_get(str(cfg["credsStore"]), server_key(host))
        return found

    def store(self, host: str, creds: Credentials) -> None:
        """Save credentials in stackd's own file (mode 0600, written atomically)."""
        data = _read_json(self.auth_file)
        auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
        assert isinstance(auths, dict)
        token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
        auths[server_key(_norm(host))] = {"auth": token}
        data["auths"] = auths
        self._write(data)

    def remove(self, host: str) -> bool:
        data = _read_json(self.auth_file)
        auths = data.get("auths")
        if not isinstance(auths, dict):
            return False
        keys = [k for k in auths if _norm(k) == _norm(host)]
        for k in keys:
            del auths[k]
        if keys:
            self._write(data)
        return bool(keys)

    def _write(self, data: dict[str, object]) -> None:
        path = self.auth_file
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
