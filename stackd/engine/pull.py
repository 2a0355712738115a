"""The pull driver: resolve, authenticate, download and verify blobs in parallel, unpack, record."""

from __future__ import annotations

import fcntl
import os
import ssl
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if "httpx" not in sys.modules:
    # httpx imports its own command-line client (rich, pygments: ~35 ms) whenever those are
    # installed; stackd never runs it, so a placeholder module stands in for it.
    _cli = types.ModuleType("httpx._main")
    _cli.main = lambda: sys.exit("httpx's command-line client is not available in stackd")  # type: ignore[attr-defined]
    sys.modules.setdefault("httpx._main", _cli)

import httpx
import trio

from stackd.engine import reference
from stackd.engine import registry as reg
from stackd.engine.auth import AuthConfig, Credentials
from stackd.engine.content import CHUNK, ContentError, ContentStore
from stackd.engine.images import ImageRecord, ImageStore, Layer, chain_ids, unpack_layers
from stackd.engine.registry_config import Endpoint, RegistryConfig
from stackd.engine.unpack_live import LayerPlan, LiveUnpack, start_server
from stackd.errors import NotFoundError, RegistryError, StackdError

MAX_CONFIG = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event for the CLI: `id` is a short digest (or the reference for whole-pull steps)."""

    id: str
    status: str  # resolving, resolved, waiting, downloading, verifying, exists, downloaded, extracting, extracted, done
    current: int = 0
    total: int = 0


ProgressFn = Callable[[Progress], None]


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


class _Retry(Exception):
    """A transient failure worth retrying (transport error, 5xx, 429)."""


class _Session:
    """Requests to one registry endpoint for one repository, with its auth state."""

    def __init__(self, puller: Puller, endpoint: Endpoint, repo: str, display: str) -> None:
        self.p = puller
        self.endpoint = endpoint
        self.repo = repo
        self.display = display  # how errors name the registry
        self.base = ""
        self.client: httpx.AsyncClient | None = None
        self.auth_header: str | None = None
        self.creds: Credentials | None = None

    def _client_for(self, url: str) -> httpx.AsyncClient:
        transport = self.p.transport
        if transport is None:
            verify: ssl.SSLContext | bool = False
            if url.startswith("https://") and self.endpoint.verify:
                verify = ssl.create_default_context(cafile=self.endpoint.ca) if self.endpoint.ca else True
            transport = httpx.AsyncHTTPTransport(verify=verify)
        return httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=True,
            headers={"User-Agent": "stackd", "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def ping(self) -> None:
        """GET /v2/ on each base URL (https first for insecure hosts); learn the auth challenge."""
        errors = []
        for url in self.endpoint.urls:
            client = self._client_for(url)
            try:
                resp = await client.get(f"{url}/v2/")
            except httpx.HTTPError as exc:
                await client.aclose()
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if resp.status_code not in (200, 401):
                await client.aclose()
                errors.append(f"{url}/v2/: HTTP {resp.status_code}")
                continue
            self.base, self.client = url, client
            if resp.status_code == 401:
                await self._authenticate(resp)
            return
        raise RegistryError(f"cannot reach registry {self.display}: {'; '.join(errors)}")

    async def _authenticate(self, resp: httpx.Response) -> None:
        assert self.client is not None
        challenges = reg.parse_challenges(resp.headers.get("www-authenticate", ""))
        self.creds = self.p.credentials(self.endpoint.host)
        user, secret = (self.creds.username, self.creds.secret) if self.creds else (None, None)
        for ch in challenges:
            if ch.scheme == "bearer":
                req = reg.token_request(ch, reg.pull_scope(self.repo) if self.repo else "", user, secret)
                try:
                    tok = await self.client.get(req.url, params=req.params, headers=req.headers)
                except httpx.HTTPError as exc:
                    raise RegistryError(f"cannot reach the token server of registry {self.display}: {exc}")
                if tok.status_code in (401, 403):
                    why = "incorrect username or password" if self.creds else "authentication required"
                    raise RegistryError(f"unauthorized: {why} for registry {self.display}")
                if tok.status_code != 200:
                    raise reg.error_message(tok.status_code, tok.content, "token request", self.display)
                self.auth_header = "Bearer " + reg.parse_token(tok.content)
                return
            if ch.scheme == "basic":
                if user is None or secret is None:
                    raise RegistryError(f"unauthorized: authentication required by registry {self.display} (use `stackd login {self.endpoint.host}`)")
                self.auth_header = reg.basic_header(user, secret)
                return
        raise RegistryError(f"registry {self.display} requires an unsupported authentication scheme")

    def _headers(self, req: reg.Request) -> dict[str, str]:
        headers = dict(req.headers)
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        return headers

    def _check(self, resp: httpx.Response, body: bytes, what: str) -> None:
        if resp.status_code in (200, 206):
            return
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Retry(f"HTTP {resp.status_code}")
        err = reg.error_message(resp.status_code, body, what, self.display)
        if resp.status_code == 401 and self.creds is not None:
            err = RegistryError(f"{what}: unauthorized: incorrect username or password for registry {self.display}")
        raise err

    async def get_small(self, req: reg.Request, what: str, limit: int) -> httpx.Response:
        """GET a manifest or config (bounded size), retrying transient failures."""
        assert self.client is not None
        async def once() -> httpx.Response:
            assert self.client is not None
            async with self.client.stream("GET", req.url, headers=self._headers(req)) as resp:
                body = bytearray()
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise RegistryError(f"{what}: registry {self.display} sent more than {limit} bytes")
                self._check(resp, bytes(body), what)
                resp._content = bytes(body)
                return resp
        resp: httpx.Response = await self.p.retrying(once, what)
        return resp


class Puller:
    """Pulls images into a state root. HTTP goes through `transport` when one is injected."""

    def __init__(
        self, state_root: Path, *, transport: httpx.AsyncBaseTransport | None = None,
        registries: RegistryConfig | None = None, auth: AuthConfig | None = None,
        progress: ProgressFn | None = None, concurrency: int = 6, retries: int = 4,
        backoff: float = 0.25, unpack: bool = True, images: ImageStore | None = None,
    ) -> None:
        self.state_root = Path(state_root)
        self.transport = transport
        self.registries = registries or RegistryConfig()
        self.auth = auth
        self.emit = progress or (lambda _p: None)
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.unpack = unpack
        self.images = images or ImageStore(self.state_root)
        self.content: ContentStore = self.images.content
        self.login: Credentials | None = None
        self.snap: Any = None
        self.server: Any = None

    def credentials(self, host: str) -> Credentials | None:
        if self.login is not None:
            return self.login
        return self.auth.lookup(host) if self.auth is not None else None

    async def retrying(self, fn: Callable[[], Any], what: str) -> Any:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return await fn()
            except (_Retry, httpx.TransportError) as exc:
                if attempt == self.retries:
                    raise RegistryError(f"{what}: failed after {attempt + 1} attempts: {exc or type(exc).__name__}")
                await trio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def pull(self, text: str, platform: str | None = None) -> ImageRecord:
        """Pull `text` (a reference) for `platform` (default linux/amd64); returns the record."""
        ref = reference.parse(text)
        want = reg.parse_platform(platform) if platform else reg.DEFAULT_PLATFORM
        self.emit(Progress(ref.familiar(), "resolving"))
        fd = await _gc_shared(self.state_root)
        try:
            errors: list[RegistryError] = []
            for ep in self.registries.endpoints(ref.domain):
                display = f"{ep.host} (mirror of {ref.domain})" if ep.mirror else ref.domain
                session = _Session(self, ep, ref.path, display)
                try:
                    await session.ping()
                    return await self._pull_from(session, ref, want, explicit=platform is not None)
                except RegistryError as exc:
                    if not ep.mirror:
                        errors.append(exc)
                        break
                    errors.append(exc)
                finally:
                    await session.aclose()
            definitive = [e for e in errors if isinstance(e, NotFoundError) or "unauthorized" in str(e)]
            raise (definitive or errors)[0] if definitive else errors[-1]
        finally:
            os.close(fd)
            if self.server is not None:
                self.server.close()
                self.server = None

    async def _pull_from(self, s: _Session, ref: reference.Reference, want: reg.Platform, *, explicit: bool) -> ImageRecord:
        where = str(ref)
        resp = await s.get_small(reg.manifest_request(s.base, ref), where, reg.MAX_MANIFEST)
        body = resp.content
        digest = reg.sha256_digest(body)
        expected = ref.digest or resp.headers.get("docker-content-digest")
        if expected and expected != digest:
            raise RegistryError(f"{where}: manifest digest mismatch: expected {expected}, got {digest} (registry {s.display})")
        parsed = reg.parse_manifest(body, resp.headers.get("content-type", ""), where)
        index_digest: str | None = None
        if isinstance(parsed, reg.Index):
            index_digest = digest
            self.content.write_blob(body, digest)
            chosen = reg.select_platform(parsed, want, where)
            resp = await s.get_small(reg.manifest_request(s.base, ref, obj=chosen.digest), where, reg.MAX_MANIFEST)
            body = resp.content
            digest = reg.sha256_digest(body)
            if digest != chosen.digest or len(body) != chosen.size:
                raise RegistryError(f"{where}: manifest digest mismatch: expected {chosen.digest}, got {digest} (registry {s.display})")
            parsed = reg.parse_manifest(body, resp.headers.get("content-type", ""), where)
            if isinstance(parsed, reg.Index):
                raise RegistryError(f"{where}: nested image indexes are not supported")
        self.emit(Progress(ref.familiar(), "resolved", 0, len(parsed.layers)))
        if self.unpack and self.server is None and not all(self.content.has(x.digest, x.size) for x in parsed.layers):
            self.server = start_server()  # warms up while the config is fetched
        cfg_desc = parsed.config
        if cfg_desc.size > MAX_CONFIG:
            raise RegistryError(f"{where}: image config too large ({cfg_desc.size} bytes)")
        if not self.content.has(cfg_desc.digest, cfg_desc.size):
            cresp = await s.get_small(reg.blob_request(s.base, ref.path, cfg_desc.digest), where, MAX_CONFIG)
            try:
                self.content.write_blob(cresp.content, cfg_desc.digest) if len(cresp.content) == cfg_desc.size else None
            except ContentError as exc:
                raise RegistryError(f"{where}: image config: {exc} (registry {s.display})")
            if len(cresp.content) != cfg_desc.size:
                raise RegistryError(f"{where}: image config: size mismatch: expected {cfg_desc.size} bytes, got {len(cresp.content)}")
        config = reg.parse_config(self.content.read(cfg_desc.digest), where)
        if explicit and (config.os, config.architecture) != (want.os, want.architecture) and not index_digest:
            raise reg.RegistryNotFound(f"{where}: image platform {config.os}/{config.architecture} does not match the requested {want}")
        diff_ids = list(config.rootfs.diff_ids)
        if len(diff_ids) != len(parsed.layers):
            raise RegistryError(f"{where}: config lists {len(diff_ids)} layers but the manifest has {len(parsed.layers)}")
        sem = trio.Semaphore(self.concurrency)
        plans = self._stream_plans(diff_ids) if self.unpack else [None] * len(diff_ids)
        try:
            async with trio.open_nursery() as nursery:
                for layer, plan in zip(parsed.layers, plans, strict=True):
                    nursery.start_soon(self._layer, s, ref, layer, sem, plan)
        except BaseExceptionGroup as group:
            raise _first_user_error(group) from None
        self.content.write_blob(body, digest)
        layers = tuple(Layer(d.digest, d.media_type, d.size, diff) for d, diff in zip(parsed.layers, diff_ids, strict=True))
        chain = chain_ids(diff_ids)[-1] if diff_ids else None
        if self.unpack and layers:
            chain = await self._unpack(layers) or chain
        plat = "/".join(x for x in (config.os, config.architecture, config.variant) if x)
        rec = ImageRecord(
            id=cfg_desc.digest, manifest_digest=digest, manifest_media_type=parsed.media_type,
            config_digest=cfg_desc.digest, layers=layers, platform=plat,
            size=sum(x.size for x in layers) + cfg_desc.size, created=config.created,
            chain_id=chain, index_digest=index_digest,
        )
        names = [str(ref.with_tag(ref.tag))] if ref.tag else []
        rec = self.images.add(rec, names, repo_digest=f"{ref.name}@{index_digest or digest}")
        self.emit(Progress(ref.familiar(), "done", len(layers), len(layers)))
        return rec

    async def _unpack(self, layers: tuple[Layer, ...]) -> str | None:
        missing: list[Layer] = []

        def announce(todo: list[Layer]) -> None:
            missing.extend(todo)
            for x in todo:
                trio.from_thread.run_sync(self.emit, Progress(_short(x.digest), "extracting", x.size, x.size))

        chain = await trio.to_thread.run_sync(unpack_layers, self.state_root, self.content, layers, announce, self.server)
        for x in missing:
            self.emit(Progress(_short(x.digest), "extracted", x.size, x.size))
        return chain

    def _stream_plans(self, diff_ids: list[str]) -> list[LayerPlan | None]:
        """For each layer not unpacked yet: its chain, diff ID and parent, to unpack while downloading."""
        from stackd.engine.snapshots import Snapshotter

        self.snap = Snapshotter(self.state_root / "snapshots", server=self.server)
        chains = chain_ids(diff_ids)
        return [None if self.snap.has(c) else LayerPlan(c, diff_ids[i], chains[i - 1] if i else None)
                for i, c in enumerate(chains)]

    async def _layer(self, s: _Session, ref: reference.Reference, d: reg.Descriptor,
                     sem: trio.Semaphore, plan: LayerPlan | None = None) -> None:
        streamer: LiveUnpack | None = None
        try:
            async with sem:  # a download slot: the unpack may finish after giving it back
                streamer = await self._fetch(s, ref, d, plan)
            if streamer is not None and streamer.live:
                # The blob is verified: the layer unpacked from the same bytes may be committed.
                sid = _short(d.digest)
                self.emit(Progress(sid, "extracting", d.size, d.size))
                await streamer.finish()
                self.emit(Progress(sid, "extracted", d.size, d.size))
        finally:
            if streamer is not None:
                streamer.abort()

    async def _fetch(self, s: _Session, ref: reference.Reference, d: reg.Descriptor,
                     plan: LayerPlan | None) -> LiveUnpack | None:
        """Download and commit one blob (unless stored), unpacking it on the way per `plan`."""
        sid = _short(d.digest)
        while True:
            if self.content.has(d.digest, d.size):
                self.emit(Progress(sid, "exists", d.size, d.size))
                return None
            ing = self.content.try_ingest(d.digest, d.size)
            if ing is not None:
                break
            self.emit(Progress(sid, "waiting", 0, d.size))  # another pull is downloading it
            await trio.sleep(0.05)
        streamer: LiveUnpack | None = None
        try:
            if self.content.has(d.digest, d.size):
                self.emit(Progress(sid, "exists", d.size, d.size))
                return None
            if plan is not None and ing.offset == 0:
                streamer = LiveUnpack.start(self.snap, plan, d)
            urls = [reg.blob_request(s.base, ref.path, d.digest).url, *d.urls]
            for i, url in enumerate(urls):
                try:
                    await self.retrying(lambda url=url: self._download(s, url, d, ing, streamer), f"{ref}: layer {sid}")  # type: ignore[misc]
                    break
                except NotFoundError:
                    if i == len(urls) - 1:
                        raise
            self.emit(Progress(sid, "verifying", d.size, d.size))
            try:
                await trio.to_thread.run_sync(ing.commit)
            except ContentError as exc:
                raise RegistryError(f"{ref}: layer {sid}: {exc} (registry {s.display}); nothing was stored")
            self.emit(Progress(sid, "downloaded", d.size, d.size))
            return streamer
        except BaseException:
            if streamer is not None:
                streamer.abort()
            raise
        finally:
            ing.close()

    async def _download(self, s: _Session, url: str, d: reg.Descriptor, ing: Any,
                        streamer: LiveUnpack | None = None) -> None:
        assert s.client is not None
        offset = ing.offset
        if offset >= d.size:
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if s.auth_header and url.startswith(s.base):
            headers["Authorization"] = s.auth_header
        sid = _short(d.digest)
        async with s.client.stream("GET", url, headers=headers) as resp:
            if resp.status_code not in (200, 206):
                await resp.aread()
                s._check(resp, resp.content, f"layer {sid}")
            if resp.status_code == 200 and ing.offset:
                ing.reset()  # the server ignored Range: restart cleanly
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != d.size - ing.offset:
                raise RegistryError(
                    f"layer {sid}: size mismatch: registry {s.display} announced {int(length) + ing.offset} bytes, manifest says {d.size}; nothing was stored"
                )
            self.emit(Progress(sid, "downloading", ing.offset, d.size))
            async for chunk in resp.aiter_raw(CHUNK):
                try:
                    ing.write(chunk)
                except ContentError as exc:
                    ing.reset()
                    raise RegistryError(f"layer {sid}: {exc} (registry {s.display}); nothing was stored")
                if streamer is not None:
                    await streamer.feed(chunk, ing.offset)
                self.emit(Progress(sid, "downloading", ing.offset, d.size))
        if ing.offset < d.size:
            raise _Retry(f"stream ended after {ing.offset} of {d.size} bytes")


def _first_user_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first StackdError in a nursery's exception group (else the group itself)."""
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        elif isinstance(exc, StackdError):
            return exc
    return group


async def _gc_shared(state_root: Path) -> int:
    """Hold the content GC lock shared (prune takes it exclusive) until the image is recorded."""
    path = state_root / "content" / "gc.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            await trio.sleep(0.05)


async def check_login(
    host: str, creds: Credentials, registries: RegistryConfig, *, transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Check credentials against a registry (as `docker login` does); raise if they are refused."""
    domain = "docker.io" if host in ("docker.io", "index.docker.io", "registry-1.docker.io") else host
    ep = registries.endpoints(domain)[-1]
    probe = Puller.__new__(Puller)
    probe.transport, probe.auth, probe.login = transport, None, creds
    probe.retries, probe.backoff = 0, 0.0
    session = _Session(probe, ep, "", domain)
    try:
        await session.ping()
        assert session.client is not None
        resp = await session.client.get(f"{session.base}/v2/", headers=session._headers(reg.Request("GET", "")))
        if resp.status_code in (401, 403):
            raise RegistryError(f"login to {domain} failed: unauthorized: incorrect username or password")
        if resp.status_code != 200:
            raise reg.error_message(resp.status_code, resp.content, "login", domain)
    finally:
        await session.aclose()


async def pull(state_root: Path, text: str, *, platform: str | None = None, **kwargs: Any) -> ImageRecord:
    """Convenience wrapper: `await pull(root, "busybox")`."""
    return await Puller(state_root, **kwargs).pull(text, platform)
