"""Image archives: load docker-archive, oci-archive and OCI layout dirs; save a docker-archive."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from stackd.engine import reference
from stackd.engine import registry as reg
from stackd.engine.content import CHUNK, ContentError
from stackd.engine.images import ImageRecord, ImageStore, Layer, chain_ids, unpack_layers
from stackd.errors import EngineError

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ArchiveError(EngineError):
    """An image archive is malformed or does not match its own digests."""


class _Source:
    """Files of an archive: a directory or a (possibly compressed) tar, read by relative name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        if not path.is_dir():
            try:
                self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed in close())
                self.names = {self._norm(m.name): m for m in self.tar.getmembers()}
            except (tarfile.TarError, OSError) as exc:
                raise ArchiveError(f"{path}: not a readable image archive: {exc}")

    @staticmethod
    def _norm(name: str) -> str:
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "/")]
        if ".." in parts:
            raise ArchiveError(f"archive entry {name!r} escapes the archive")
        return "/".join(parts)

    def exists(self, name: str) -> bool:
        name = self._norm(name)
        return name in self.names if self.tar is not None else (self.path / name).is_file()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        key = self._norm(name)
        if self.tar is not None:
            member = self.names.get(key)
            f = self.tar.extractfile(member) if member is not None else None
            if f is None:
                raise ArchiveError(f"{self.path}: {name} missing from the archive")
            with f:
                yield f
            return
        try:
            with open(self.path / key, "rb") as fh:
                yield fh
        except FileNotFoundError:
            raise ArchiveError(f"{self.path}: {name} missing from the layout")

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ArchiveError(f"{self.path}: {name} is too large")
        return data

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _json(src: _Source, name: str) -> object:
    try:
        return json.loads(src.read(name))
    except ValueError:
        raise ArchiveError(f"{src.path}: {name} is not valid JSON")


def _sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return "zstd" if head[:4] == _ZSTD_MAGIC else "tar"


def _diff_id(path: Path, kind: str) -> str:
    """The sha256 of the uncompressed layer (what the config's rootfs lists)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if kind == "tar":
            while chunk := f.read(CHUNK):
                h.update(chunk)
        elif kind == "gzip":
            d = zlib.decompressobj(31)
            while chunk := f.read(CHUNK):
                h.update(d.decompress(chunk))
            h.update(d.flush())
        else:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(f) as r:
                while chunk := r.read(CHUNK):
                    h.update(chunk)
    return "sha256:" + h.hexdigest()


def load(state_root: Path, path: Path) -> list[tuple[ImageRecord, list[str]]]:
    """Load every image in a docker-archive, oci-archive or OCI layout; returns (record, names)."""
    images = ImageStore(state_root)
    src = _Source(Path(path))
    try:
        if src.exists("manifest.json"):
            return _load_docker(images, src)
        if src.exists("index.json"):
            return _load_oci(images, src)
        raise ArchiveError(f"{path}: neither a docker-archive (manifest.json) nor an OCI layout (index.json)")
    finally:
        src.close()


def _load_docker(images: ImageStore, src: _Source) -> list[tuple[ImageRecord, list[str]]]:
    entries = _json(src, "manifest.json")
    if not isinstance(entries, list):
        raise ArchiveError(f"{src.path}: manifest.json must be a list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or "Config" not in entry or "Layers" not in entry:
            raise ArchiveError(f"{src.path}: manifest.json entry without Config/Layers")
        cfg_bytes = src.read(entry["Config"])
        config = reg.parse_config(cfg_bytes, str(src.path))
        diff_ids = list(config.rootfs.diff_ids)
        if len(diff_ids) != len(entry["Layers"]):
            raise ArchiveError(f"{src.path}: config lists {len(diff_ids)} layers, manifest.json {len(entry['Layers'])}")
        layers = []
        any_zstd = False
        for name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            with src.open(name) as f:
                digest, size = images.content.import_file(f)
            blob = images.content.path(digest)
            with open(blob, "rb") as f:
                kind = _sniff(f.read(4))
            if (digest if kind == "tar" else _diff_id(blob, kind)) != diff_id:
                raise ArchiveError(f"{src.path}: layer {name} does not match diff id {diff_id} in the config")
            any_zstd |= kind == "zstd"
            media = {"tar": reg.DOCKER_LAYER_TAR, "gzip": reg.DOCKER_LAYER_GZIP, "zstd": reg.OCI_LAYER_ZSTD}[kind]
            layers.append(Layer(digest, media, size, diff_id))
        names = [str(reference.parse(t)) for t in entry.get("RepoTags") or []]
        out.append((_record(images, cfg_bytes, layers, config, oci=any_zstd, names=names), names))
    return out


def _record(images: ImageStore, cfg_bytes: bytes, layers: list[Layer], config: reg.ImageConfig, *, oci: bool,
            names: list[str], manifest: bytes | None = None, index_digest: str | None = None) -> ImageRecord:
    cfg_digest = images.content.write_blob(cfg_bytes)
    if oci:
        layers = [Layer(x.digest, x.media_type.replace(reg.DOCKER_LAYER_TAR, reg.OCI_LAYER_TAR).replace(reg.DOCKER_LAYER_GZIP, reg.OCI_LAYER_GZIP), x.size, x.diff_id) for x in layers]
    if manifest is None:
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": reg.OCI_MANIFEST if oci else reg.DOCKER_MANIFEST,
            "config": {"mediaType": reg.OCI_CONFIG if oci else reg.DOCKER_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
            "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size} for x in layers],
        }, separators=(",", ":")).encode()
    man_digest = images.content.write_blob(manifest)
    chain = chain_ids([x.diff_id for x in layers])
    top = unpack_layers(images.state_root, images.content, layers) or (chain[-1] if chain else None)
    rec = ImageRecord(
        id=cfg_digest, manifest_digest=man_digest, manifest_media_type=reg.OCI_MANIFEST if oci else reg.DOCKER_MANIFEST,
        config_digest=cfg_digest, layers=tuple(layers), platform="/".join(p for p in (config.os, config.architecture, config.variant) if p),
        size=sum(x.size for x in layers) + len(cfg_bytes), created=config.created, chain_id=top, index_digest=index_digest,
    )
    return images.add(rec, names)


def _blob(images: ImageStore, src: _Source, d: reg.Descriptor) -> bytes | None:
    """Copy a layout blob into the content store, verifying digest and size; small ones returned."""
    name = f"blobs/sha256/{d.digest.removeprefix('sha256:')}"
    if not images.content.has(d.digest, d.size):
        with images.content.ingest(d.digest, d.size) as ing, src.open(name) as f:
            ing.reset()
            try:
                while chunk := f.read(CHUNK):
                    ing.write(chunk)
                ing.commit()
            except ContentError as exc:
                raise ArchiveError(f"{src.path}: {name}: {exc}")
    return images.content.read(d.digest) if d.size <= reg.MAX_MANIFEST else None


def _load_oci(images: ImageStore, src: _Source) -> list[tuple[ImageRecord, list[str]]]:
    try:
        index = reg.Index.model_validate(_json(src, "index.json"))
    except ValueError as exc:
        raise ArchiveError(f"{src.path}: malformed index.json: {exc}")
    out = []
    for desc in index.manifests:
        ann = desc.annotations or {}
        raw = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
        names = [str(reference.parse(raw))] if raw and (":" in raw or "/" in raw) else []
        body = _blob(images, src, desc) or b""
        parsed = reg.parse_manifest(body, desc.media_type, str(src.path))
        index_digest = None
        if isinstance(parsed, reg.Index):
            index_digest, desc = desc.digest, reg.select_platform(parsed, reg.DEFAULT_PLATFORM, str(src.path))
            body = _blob(images, src, desc) or b""
            parsed = reg.parse_manifest(body, desc.media_type, str(src.path))
            if isinstance(parsed, reg.Index):
                raise ArchiveError(f"{src.path}: nested indexes are not supported")
        cfg_bytes = _blob(images, src, parsed.config) or b""
        config = reg.parse_config(cfg_bytes, str(src.path))
        diff_ids = list(config.rootfs.diff_ids)
        if len(diff_ids) != len(parsed.layers):
            raise ArchiveError(f"{src.path}: config lists {len(diff_ids)} layers, the manifest {len(parsed.layers)}")
        for d in parsed.layers:
            _blob(images, src, d)
        layers = [Layer(d.digest, d.media_type, d.size, diff) for d, diff in zip(parsed.layers, diff_ids, strict=True)]
        rec = _record(images, cfg_bytes, layers, config, oci=parsed.media_type == reg.OCI_MANIFEST, names=names,
                      manifest=body, index_digest=index_digest)
        out.append((rec, names))
    return out


def _decompressed(images: ImageStore, layer: Layer, tmpdir: Path) -> Path:
    """The layer as an uncompressed tar (a temp file unless the blob already is one), verified."""
    blob = images.content.path(layer.digest)
    with open(blob, "rb") as f:
        kind = _sniff(f.read(4))
    if kind == "tar":
        return blob
    out = tmpdir / layer.diff_id.removeprefix("sha256:")
    h = hashlib.sha256()
    with open(blob, "rb") as f, open(out, "wb") as w:
        if kind == "gzip":
            d = zlib.decompressobj(31)
            while chunk := f.read(CHUNK):
                data = d.decompress(chunk)
                h.update(data)
                w.write(data)
            data = d.flush()
            h.update(data)
            w.write(data)
        else:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(f) as r:
                while data := r.read(CHUNK):
                    h.update(data)
                    w.write(data)
    if "sha256:" + h.hexdigest() != layer.diff_id:
        raise ArchiveError(f"layer {layer.digest} does not decompress to its diff id {layer.diff_id}")
    return out


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tf.addfile(info, io.BytesIO(data))


def save(state_root: Path, names: list[str], output: Path) -> None:
    """Write a docker-archive (manifest.json, repositories, config and uncompressed layers)."""
    images = ImageStore(state_root)
    recs = [(n, images.resolve(n)) for n in names]
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    manifest: list[dict[str, object]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    with tempfile.TemporaryDirectory(dir=output.parent) as td:
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                for text, rec in recs:
                    cfg_name = rec.config_digest.removeprefix("sha256:") + ".json"
                    if cfg_name not in written:
                        _add_bytes(tf, cfg_name, images.content.read(rec.config_digest))
                        written.add(cfg_name)
                    layer_names = []
                    for layer in rec.layers:
                        lname = layer.diff_id.removeprefix("sha256:") + ".tar"
                        if lname not in written:
                            path = _decompressed(images, layer, Path(td))
                            info = tf.gettarinfo(str(path), arcname=lname)
                            info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = 0o644, 0, 0, "", "", 0
                            with open(path, "rb") as f:
                                tf.addfile(info, f)
                            written.add(lname)
                        layer_names.append(lname)
                    ref = reference.parse(text) if not rec.id.removeprefix("sha256:").startswith(text.removeprefix("sha256:")) else None
                    tags = [ref.familiar()] if ref is not None and ref.tag else [reference.familiar(n) for n in rec.names]
                    manifest.append({"Config": cfg_name, "RepoTags": tags, "Layers": layer_names})
                    for t in tags:
                        repo, _, tag = t.rpartition(":")
                        repositories.setdefault(repo, {})[tag] = layer_names[-1].removesuffix(".tar") if layer_names else ""
                _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
                _add_bytes(tf, "repositories", json.dumps(repositories).encode())
            os.replace(tmp, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
