"""Layers unpack while they download; a snapshot is committed only after both digests verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackd.engine.images import chain_ids
from stackd.engine.snapshots import Snapshotter
from stackd.engine.unpack import UnpackError
from stackd.engine.unpack_server import ForkedUnpack
from stackd.errors import RegistryError
from tests.engine.images.conftest import MemImage, mem_image, sha, tar_layer
from tests.engine.images.test_img_lying import REF, FakeRegistry, R, make_puller

FILES = [{"a.txt": b"a" * 5000, "d/x": b"x"}, {"b.bin": bytes(range(256)) * 4000}]


def image() -> MemImage:
    return mem_image([tar_layer(f) for f in FILES])


@pytest.fixture
def streams(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Blob paths of the unpack workers started (None: fed from the download)."""
    seen: list[Any] = []
    real = Snapshotter.start_unpack

    def spy(self: Snapshotter, blob_path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(blob_path)
        proc = real(self, blob_path, *args, **kwargs)
        assert isinstance(proc, ForkedUnpack)  # forked from the pull's warm server
        return proc

    monkeypatch.setattr(Snapshotter, "start_unpack", spy)
    return seen


def layer_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "snapshots" / "layers").iterdir())


def diff_ids(img: MemImage) -> list[str]:
    return list(json.loads(img.config)["rootfs"]["diff_ids"])


async def test_layers_unpack_from_the_download(tmp_path: Path, streams: list[Any]) -> None:
    img = image()
    rec = await make_puller(tmp_path, FakeRegistry(img)).pull(REF)
    assert streams == [None, None]  # both workers read the HTTP body, none re-read the blob
    chains = chain_ids(diff_ids(img))
    assert rec.chain_id == chains[-1]
    assert layer_dirs(tmp_path) == sorted(c.removeprefix("sha256:") for c in chains)
    first = tmp_path / "snapshots" / "layers" / chains[0].removeprefix("sha256:") / "fs"
    second = tmp_path / "snapshots" / "layers" / chains[1].removeprefix("sha256:") / "fs"
    assert (first / "a.txt").read_bytes() == b"a" * 5000 and (first / "d" / "x").read_bytes() == b"x"
    assert (second / "b.bin").read_bytes() == bytes(range(256)) * 4000
    assert list((tmp_path / "snapshots" / "tmp").iterdir()) == []


async def test_lying_blob_commits_no_snapshot(tmp_path: Path, streams: list[Any]) -> None:
    img = image()
    bad = img.layer_digests[1]

    def lie(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(bad):
            data = bytearray(img.blobs[bad])
            data[-20] ^= 0xFF  # still a readable gzip stream up to its trailer
            return R(200, bytes(data))
        return None

    with pytest.raises(RegistryError, match="digest mismatch"):
        await make_puller(tmp_path, FakeRegistry(img, lie)).pull(REF)
    assert None in streams
    chains = chain_ids(diff_ids(img))
    assert chains[1].removeprefix("sha256:") not in layer_dirs(tmp_path)
    assert list((tmp_path / "snapshots" / "tmp").iterdir()) == []


async def test_diff_id_mismatch_commits_no_snapshot(tmp_path: Path, streams: list[Any]) -> None:
    layers = [tar_layer(f) for f in FILES]
    img = mem_image(layers)
    config = json.loads(img.config)
    config["rootfs"]["diff_ids"][1] = sha(b"something else")
    img.config = json.dumps(config).encode()
    man = json.loads(img.manifest)
    man["config"].update(digest=sha(img.config), size=len(img.config))
    img.manifest = json.dumps(man).encode()
    img.blobs[sha(img.config)] = img.config

    with pytest.raises(UnpackError, match="does not match diff_id"):
        await make_puller(tmp_path, FakeRegistry(img)).pull(REF)
    assert layer_dirs(tmp_path) in ([], [sha(layers[0]).removeprefix("sha256:")])
    assert list((tmp_path / "snapshots" / "tmp").iterdir()) == []


async def test_restarted_download_unpacks_from_the_blob(tmp_path: Path, streams: list[Any]) -> None:
    img = image()
    layer = img.layer_digests[1]
    calls = {"n": 0}

    def cut_then_ignore_range(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(layer):
            calls["n"] += 1
            data = img.blobs[layer]
            if calls["n"] == 1:  # the connection drops half-way
                return R(200, data[: len(data) // 2], headers={"Content-Length": str(len(data))})
            return R(200, data)  # the retry's Range is ignored: the download starts over
        return None

    rec = await make_puller(tmp_path, FakeRegistry(img, cut_then_ignore_range)).pull(REF)
    assert calls["n"] == 2
    blob = tmp_path / "content" / "blobs" / "sha256" / layer.removeprefix("sha256:")
    assert streams.count(None) == 2 and streams[-1] == blob  # the abandoned stream is redone from the blob
    fs = tmp_path / "snapshots" / "layers" / str(rec.chain_id).removeprefix("sha256:") / "fs"
    assert (fs / "b.bin").read_bytes() == bytes(range(256)) * 4000
    assert list((tmp_path / "snapshots" / "tmp").iterdir()) == []
