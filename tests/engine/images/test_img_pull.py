"""Pulls from real docker-registry processes: formats, platforms, TLS, Basic and Bearer auth."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import trio

from stackd.engine.auth import AuthConfig, Credentials
from stackd.engine.content import ContentStore
from stackd.engine.images import ImageStore, chain_ids
from stackd.engine.pull import Progress, Puller
from stackd.engine.registry import DOCKER_MANIFEST, OCI_LAYER_ZSTD, OCI_MANIFEST
from stackd.engine.registry_config import RegistryConfig, RegistrySettings
from stackd.errors import NotFoundError, RegistryError
from tests.engine.images.conftest import PASSWORD, USER, Registry, TokenIssuer, World


def mirror_config(reg: Registry) -> RegistryConfig:
    return RegistryConfig({"docker.io": RegistrySettings(mirrors=(reg.url,))})


def puller(root: Path, config: RegistryConfig | None = None, **kw: object) -> Puller:
    return Puller(root, registries=config or RegistryConfig(), backoff=0.01, **kw)  # type: ignore[arg-type]


async def test_pull_short_name_through_docker_io_mirror(world: World, tmp_path: Path) -> None:
    events: list[Progress] = []
    rec = await puller(tmp_path, mirror_config(world.plain), progress=events.append).pull("busybox")
    assert rec.names == ("docker.io/library/busybox:latest",)
    assert rec.manifest_media_type == DOCKER_MANIFEST
    assert len(rec.layers) == 3 and rec.platform == "linux/amd64"
    assert rec.repo_digests == (f"docker.io/library/busybox@{rec.manifest_digest}",)
    store = ContentStore(tmp_path)
    assert store.verify_all() == []
    assert set(store.list()) == rec.blobs()
    assert {e.status for e in events} >= {"resolving", "downloading", "verifying", "downloaded", "done"}
    assert not list((tmp_path / "content" / "ingest").glob("*.partial"))
    # The config is the one skopeo pushed (diff ids of three uncompressed layers).
    config = json.loads(store.read(rec.config_digest))
    assert config["rootfs"]["diff_ids"] == rec.diff_ids
    assert rec.chain_id == chain_ids(rec.diff_ids)[-1]
    # Each layer is unpacked into its snapshot; layer 3's deletion is an overlay whiteout.
    top = tmp_path / "snapshots" / "layers" / rec.chain_id.removeprefix("sha256:") / "fs"
    assert (top / "etc" / "hello").read_text() == "hello from layer 3\n"
    gone = (top / "data" / "gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0


@pytest.mark.parametrize(("repo", "layer_type"), [("test/busybox:oci", "application/vnd.oci.image.layer.v1.tar+gzip"), ("test/zstd", OCI_LAYER_ZSTD)])
async def test_pull_oci_gzip_and_zstd(world: World, tmp_path: Path, repo: str, layer_type: str) -> None:
    rec = await puller(tmp_path).pull(f"{world.plain.host}/{repo}")
    assert rec.manifest_media_type == OCI_MANIFEST
    assert {x.media_type for x in rec.layers} == {layer_type}
    assert ImageStore(tmp_path).resolve(f"{world.plain.host}/{repo}").id == rec.id


async def test_pull_index_chooses_the_right_platform(world: World, tmp_path: Path) -> None:
    p = puller(tmp_path)
    amd = await p.pull(f"{world.plain.host}/test/multi")
    assert amd.manifest_digest == world.digests["amd"] and amd.platform == "linux/amd64"
    assert amd.index_digest is not None
    arm = await p.pull(f"{world.plain.host}/test/multi", platform="linux/arm64")
    assert arm.manifest_digest == world.digests["arm"] and arm.platform == "linux/arm64"
    with pytest.raises(NotFoundError, match=r"no manifest for platform linux/s390x \(available: linux/amd64, linux/arm64\)"):
        await p.pull(f"{world.plain.host}/test/multi", platform="linux/s390x")


async def test_second_pull_downloads_nothing_and_by_digest_works(world: World, tmp_path: Path) -> None:
    ref = f"{world.plain.host}/test/busybox"
    first = await puller(tmp_path).pull(ref)
    events: list[Progress] = []
    again = await puller(tmp_path, progress=events.append).pull(f"{ref}@{first.manifest_digest}")
    assert again.id == first.id
    assert not [e for e in events if e.status == "downloading"]
    assert len([e for e in events if e.status == "exists"]) == 3


async def test_concurrent_pulls_share_downloads(world: World, tmp_path: Path) -> None:
    results = []
    events: list[list[Progress]] = [[], []]

    async def one(i: int) -> None:
        results.append(await puller(tmp_path, progress=events[i].append).pull(f"{world.plain.host}/test/busybox:oci"))

    async with trio.open_nursery() as n:
        n.start_soon(one, 0)
        n.start_soon(one, 1)
    assert results[0].id == results[1].id
    downloaded = [{e.id for e in evs if e.status == "downloaded"} for evs in events]
    assert not downloaded[0] & downloaded[1]  # no blob was downloaded twice
    assert len(downloaded[0] | downloaded[1]) == 3
    assert ContentStore(tmp_path).verify_all() == []


async def test_unknown_tag_and_repository_are_not_found(world: World, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as exc:
        await puller(tmp_path).pull(f"{world.plain.host}/test/busybox:nope")
    assert f"{world.plain.host}/test/busybox:nope" in str(exc.value) and "not found" in str(exc.value)
    with pytest.raises(NotFoundError) as exc:
        await puller(tmp_path, mirror_config(world.plain)).pull("nosuchimage:1.0")
    msg = str(exc.value)
    assert "docker.io/library/nosuchimage:1.0" in msg and world.plain.host in msg and "not found" in msg


async def test_tls_registry_with_generated_ca(world: World, tls_registry: Registry, tmp_path: Path) -> None:
    assert tls_registry.ca is not None
    cfg = RegistryConfig({tls_registry.host: RegistrySettings(ca=str(tls_registry.ca))})
    rec = await puller(tmp_path, cfg).pull(f"{tls_registry.host}/test/busybox:oci")
    assert len(rec.layers) == 3
    wrong = RegistryConfig({tls_registry.host: RegistrySettings(ca="/etc/ssl/certs/ca-certificates.crt")})
    with pytest.raises(RegistryError, match="cannot reach registry"):
        await puller(tmp_path / "other", wrong).pull(f"{tls_registry.host}/test/busybox:oci")


def auth_with(tmp_path: Path, host: str, password: str) -> AuthConfig:
    auth = AuthConfig(tmp_path / "auth.json", None)
    auth.store(host, Credentials(USER, password))
    return auth


async def test_basic_auth(world: World, basic_registry: Registry, tmp_path: Path) -> None:
    ref = f"{basic_registry.host}/test/busybox"
    rec = await puller(tmp_path, auth=auth_with(tmp_path, basic_registry.host, PASSWORD)).pull(ref)
    assert len(rec.layers) == 3
    with pytest.raises(RegistryError, match="unauthorized") as exc:
        await puller(tmp_path, auth=auth_with(tmp_path / "w", basic_registry.host, "wrong-secret-123")).pull(ref)
    assert "wrong-secret-123" not in str(exc.value)
    with pytest.raises(RegistryError, match="unauthorized"):
        await puller(tmp_path).pull(ref)


async def test_bearer_token_auth(world: World, token_registry: tuple[Registry, TokenIssuer], tmp_path: Path) -> None:
    reg, issuer = token_registry
    ref = f"{reg.host}/test/zstd"
    rec = await puller(tmp_path, auth=auth_with(tmp_path, reg.host, PASSWORD)).pull(ref)
    assert len(rec.layers) == 3
    assert issuer.requests[-1]["scope"] == ["repository:test/zstd:pull"]
    assert issuer.requests[-1]["service"] == ["stackd-test-registry"]
    with pytest.raises(RegistryError, match="unauthorized") as exc:
        await puller(tmp_path, auth=auth_with(tmp_path / "w", reg.host, "bad-pw-991")).pull(ref)
    assert "bad-pw-991" not in str(exc.value)
