"""registries.toml (mirrors, insecure, CA) and credentials (stackd login file, docker config, helpers)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from stackd.engine import registry_config as rc
from stackd.engine.auth import AuthConfig, AuthError, Credentials


def test_endpoints_mirrors_then_registry(tmp_path: Path) -> None:
    cfg = rc.parse('[registry."docker.io"]\nmirrors = ["http://127.0.0.1:5000", "mirror.example:443"]\n'
                   '[registry."reg.example:5000"]\ninsecure = true\n[registry."tls.example"]\nca = "/x/ca.pem"\n')
    eps = cfg.endpoints("docker.io")
    assert [e.urls for e in eps] == [("http://127.0.0.1:5000",), ("https://mirror.example:443",), ("https://registry-1.docker.io",)]
    assert [e.mirror for e in eps] == [True, True, False]
    [ins] = cfg.endpoints("reg.example:5000")
    assert ins.urls == ("https://reg.example:5000", "http://reg.example:5000") and not ins.verify
    [tls] = cfg.endpoints("tls.example")
    assert tls.urls == ("https://tls.example",) and tls.verify and tls.ca == "/x/ca.pem"
    [loop] = cfg.endpoints("localhost:5000")
    assert loop.urls[-1] == "http://localhost:5000"  # loopback may use plain HTTP by default
    assert rc.is_loopback("127.0.0.9:80") and rc.is_loopback("[::1]:5000") and not rc.is_loopback("10.0.0.1:5000")


def test_load_from_param_env_and_default(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[registry."a.example"]\ninsecure = true\n')
    assert rc.load(f).is_insecure("a.example")
    assert rc.load(environ={rc.ENV_PATH: str(f)}).is_insecure("a.example")
    assert rc.load(environ={rc.ENV_PATH: str(tmp_path / "absent.toml")}).registries == {}
    with pytest.raises(rc.RegistryConfigError, match="not found"):
        rc.load(tmp_path / "absent.toml")
    for bad, msg in [('[registry."x"]\nmirrors = "m"\n', "must be a list"), ('[registry."x"]\nfoo = 1\n', "unknown key 'foo'"),
                     ("[registry\n", "r.toml"), ('[registry."x"]\ninsecure = "yes"\n', "true or false")]:
        with pytest.raises(rc.RegistryConfigError, match=msg):
            rc.parse(bad, "r.toml")


def test_docker_config_auths_and_stackd_login_file(tmp_path: Path) -> None:
    docker = tmp_path / "docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hubpw").decode()},
        "reg.example:5000": {"auth": base64.b64encode(b"bob:pw:with:colons").decode()},
        "tok.example": {"identitytoken": "refresh-1"},
    }}))
    auth = AuthConfig(tmp_path / "stackd" / "auth.json", docker)
    assert auth.lookup("docker.io") == Credentials("hub", "hubpw")
    assert auth.lookup("reg.example:5000") == Credentials("bob", "pw:with:colons")
    assert auth.lookup("tok.example") == Credentials("<token>", "refresh-1")
    assert auth.lookup("other.example") is None
    assert "hubpw" not in repr(auth.lookup("docker.io"))
    auth.store("reg.example:5000", Credentials("alice", "new"))  # stackd's own file wins
    assert auth.lookup("reg.example:5000") == Credentials("alice", "new")
    assert stat.S_IMODE(auth.auth_file.stat().st_mode) == 0o600
    assert auth.remove("reg.example:5000") and not auth.remove("reg.example:5000")
    assert auth.lookup("reg.example:5000") == Credentials("bob", "pw:with:colons")


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\n[ "$1" = get ] || exit 3\nread server\n'
                      'case "$server" in\n  helper.example) echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"hu\\",\\"Secret\\":\\"hs\\"}";;\n'
                      '  *) echo "credentials not found in native keychain"; exit 1;;\nesac\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"credHelpers": {"helper.example": "fake"}, "credsStore": "fake"}))
    auth = AuthConfig(tmp_path / "auth.json", docker)
    assert auth.lookup("helper.example") == Credentials("hu", "hs")
    assert auth.lookup("nothing.example") is None  # credsStore has none
    docker.write_text(json.dumps({"credsStore": "missing"}))
    with pytest.raises(AuthError, match="docker-credential-missing not found"):
        auth.lookup("x.example")
