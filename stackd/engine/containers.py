"""The container manager: create, start, stop, kill, remove, wait, exec, … on records, bundles and shims.

Layout (roots are injected): `<run_root>/containers/<id>/` is the OCI bundle (rootfs mounted
from the snapshot `<id>`), `<run_root>/shims/<id>/` the shim's directory, `<run_root>/locks/<id>`
the container's lock (flock, held by the process acting on it, released by the kernel if that
process dies), `<run_root>/runtime/<runtime>/` the runtime's state. `<state_root>/containers/<id>/`
holds the json-file log and the /etc files. A shim lives while the container is running,
paused or restarting; the record is brought up to date from it whenever it is read (`sync`).
`STACKD_TEST_CRASH_AT=<step>` makes the process exit at a named step (crash tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal as _signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stackd.engine import containers_state as st
from stackd.engine.container_config import ContainerConfig, ImageConfig
from stackd.engine.containers_ops import ContainerOps
from stackd.engine.containers_runtime import Runtime, remove_cgroup
from stackd.engine.containers_store import ContainerRecord, ContainerStore
from stackd.errors import ConflictError, EngineError, NotFoundError

CRASH_ENV = "STACKD_TEST_CRASH_AT"


def crash_point(step: str) -> None:
    """Exit abruptly at `step` when the crash tests ask for it."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


def images_in_use(state_root: Path) -> set[str]:
    """Image IDs that containers under `state_root` use (for image rm/prune)."""
    if not (Path(state_root) / "stackd.db").exists():
        return set()
    return ContainerStore(state_root).image_ids()


def signal_number(sig: str | int) -> int:
    """SIGTERM, TERM, 15 → 15."""
    if isinstance(sig, int):
        return sig
    text = sig.strip().upper()
    if text.isdigit():
        return int(text)
    try:
        return int(_signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise EngineError(f"invalid signal {sig!r}") from None


_ADJ = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quirky", "sharp", "tender", "vivid", "wise", "zen")
_NOUN = ("hopper", "turing", "lovelace", "ritchie", "thompson", "knuth", "curie", "noether",
         "shannon", "torvalds", "pike", "liskov", "hamilton", "dijkstra", "babbage", "wozniak")


class ContainerManager(ContainerOps):
    """Containers of one state root and run root, driven through per-container shims.

    Its collaborators come from the `Engine` (engine.py), which builds them: `images`,
    `snapshots`, `net` and `volumes` are each the object or a function that makes it on first
    use (`net` may make None: no networking)."""

    def __init__(self, state_root: Path, run_root: Path, *, images: Any, snapshots: Any, net: Any,
                 volumes: Any, runtime: str = "stackd-runtime", cgroup_parent: str = "/stackd") -> None:
        self.state_root = Path(state_root)
        self.run_root = Path(run_root)
        self.runtime_name = runtime
        self.cgroup_parent = cgroup_parent
        self.store = ContainerStore(self.state_root)
        self._parts = {"images": images, "snapshots": snapshots, "net": net, "volumes": volumes}
        self._runtimes: dict[str, Runtime] = {}
        self._image_configs: dict[str, ImageConfig] = {}
        self._local = threading.local()
        for sub in ("containers", "shims", "locks"):
            (self.run_root / sub).mkdir(parents=True, exist_ok=True)

    # --- collaborators and paths ------------------------------------------------------------

    def _part(self, name: str) -> Any:
        part = self._parts[name]
        if callable(part):
            part = self._parts[name] = part()
        return part

    @property
    def images(self) -> Any:
        """The ImageStore."""
        return self._part("images")

    @property
    def snapshots(self) -> Any:
        """The Snapshotter."""
        return self._part("snapshots")

    @property
    def net(self) -> Any:
        """The NetManager (None if the engine runs without networking)."""
        return self._part("net")

    @property
    def volumes(self) -> Any:
        """The VolumeStore."""
        return self._part("volumes")

    def runtime(self, name: str | None = None) -> Runtime:
        name = name or self.runtime_name
        rt = self._runtimes.get(name)
        if rt is None:
            rt = self._runtimes[name] = Runtime.for_name(name, self.run_root)
        return rt

    def bundle_dir(self, cid: str) -> Path:
        return self.run_root / "containers" / cid

    def shim_dir(self, cid: str) -> Path:
        return self.run_root / "shims" / cid

    def state_dir(self, cid: str) -> Path:
        return self.state_root / "containers" / cid

    def log_path(self, cid: str) -> Path:
        return self.state_dir(cid) / f"{cid}-json.log"

    def cgroups_path(self, cid: str) -> str:
        return f"{self.cgroup_parent.rstrip('/')}/{cid}"

    @contextlib.contextmanager
    def lock(self, cid: str, *, blocking: bool = True) -> Iterator[bool]:
        """The container's flock; yields False if `blocking` is off and another holds it."""
        fd = os.open(self.run_root / "locks" / cid, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            held = self._held()
            held.add(cid)
            try:
                yield True
            finally:
                held.discard(cid)
        finally:
            os.close(fd)

    def _held(self) -> set[str]:
        held: set[str] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = set()
        return held

    def holds(self, cid: str) -> bool:
        """True if this thread holds the container's lock."""
        return cid in self._held()

    # --- create -------------------------------------------------------------------------------

    def _name(self, wanted: str) -> str:
        if wanted:
            if not all(c.isalnum() or c in "_.-" for c in wanted) or not wanted[0].isalnum():
                raise EngineError(f"invalid container name {wanted!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            return wanted
        taken = self.store.names()
        while True:
            name = f"{secrets.choice(_ADJ)}_{secrets.choice(_NOUN)}"
            if name not in taken:
                return name
            name += str(secrets.randbelow(100))
            if name not in taken:
                return name

    def image_config(self, image_id: str) -> ImageConfig:
        """The image's config (kept per config digest: content-addressed, so it never changes)."""
        rec = self.images.get(image_id)
        found = self._image_configs.get(rec.config_digest)
        if found is None:
            found = ImageConfig.from_oci(json.loads(self.images.content.read(rec.config_digest)))
            self._image_configs[rec.config_digest] = found
        return found

    def create(self, cfg: ContainerConfig) -> ContainerRecord:
        """Record the container, prepare its snapshot and bundle; status `created`."""
        import dataclasses

        from stackd.engine import containers_net, containers_volumes

        img = self.images.resolve(cfg.image_id or cfg.image)
        cfg = dataclasses.replace(cfg, image_id=img.id, image_config=self.image_config(img.id),
                                  name=self._name(cfg.name))
        if cfg.init and not os.path.exists("/usr/bin/tini-static"):
            raise EngineError("--init needs /usr/bin/tini-static (apt-get install tini)")
        if cfg.name in self.store.names():
            raise ConflictError(f'the container name "/{cfg.name}" is already in use; '
                                "remove or rename that container first")
        cfg = containers_net.prepare(self, cfg)  # port conflicts refused before anything exists
        cfg = containers_volumes.prepare(self, cfg)
        cid = secrets.token_hex(32)
        with self.lock(cid):
            rec = self.store.insert(ContainerRecord(
                id=cid, name=cfg.name, image=cfg.image, image_id=img.id, config=cfg,
                status=st.CREATING, runtime=self.runtime_name))
            crash_point("create:recorded")
            try:
                containers_net.setup(self, rec)
                crash_point("create:network")
                self._build_bundle(rec, img)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.store.transition(cid, st.REMOVING)
                    self._release(cid, volumes=True)
                    self.store.delete(cid)
                raise
            crash_point("create:bundle")
            return self.store.transition(cid, st.CREATED)

    def _chain_id(self, img: Any) -> str | None:
        chain = img.chain_id
        if img.layers and (chain is None or not self.snapshots.has(chain)):
            from stackd.engine.images import unpack_layers

            chain = unpack_layers(self.state_root, self.images.content, img.layers)
        return chain  # type: ignore[no-any-return]

    def _build_bundle(self, rec: ContainerRecord, img: Any = None) -> None:
        """Snapshot, rootfs mount and config.json (again after a reboot emptied the run root)."""
        from stackd.engine import bundle, mounts

        cid = rec.id
        img = img or self.images.get(rec.image_id)
        if cid not in self.snapshots.active():
            snap_mount = self.snapshots.prepare(cid, self._chain_id(img))
        else:
            chain = self._chain_id(img)
            snap_mount = _active_mount(self.snapshots, cid, self.snapshots.lineage(chain) if chain else [])
        crash_point("create:snapshot")
        bdir = self.bundle_dir(cid)
        bdir.mkdir(parents=True, exist_ok=True)
        m = bundle.prepare_rootfs(bdir, snap_mount)
        if not mounts.is_mountpoint(m.target):
            mounts.mount(m, m.target)
        crash_point("create:mounted")
        sdir = self.state_dir(cid)
        sdir.mkdir(parents=True, exist_ok=True)
        from stackd.engine import containers_net, containers_volumes

        cfg = containers_volumes.acquire(self, rec, str(m.target), rec.config)
        cfg = containers_net.bundle_config(self, rec, cfg)
        bundle.write_bundle(cfg, container_id=cid, bundle_dir=bdir, state_dir=sdir,
                            options=bundle.BundleOptions(cgroup_parent=self.cgroup_parent))

    # --- observe ------------------------------------------------------------------------------

    def get(self, text: str) -> ContainerRecord:
        return self.sync(self.store.resolve(text))

    def list(self, *, all: bool = True) -> list[ContainerRecord]:
        recs = [self.sync(r) for r in self.store.list()]
        return recs if all else [r for r in recs if r.status in st.LIVE]

    def sync(self, rec: ContainerRecord) -> ContainerRecord:
        """Bring the record up to date from the shim (or from its absence); returns the new record."""
        from stackd.engine.containers_restore import observe

        return observe(self, rec)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, text: str, *, console_size: tuple[int, int] | None = None,
              on_attach: bool = False) -> ContainerRecord:
        """Start the container through a new shim; with `on_attach` the shim only creates it and
        the first `attach` (ShimClient(shim_dir).attach) starts it, so no output is missed."""
        from stackd.engine import mounts
        from stackd.engine.shim.client import ShimConfig, ShimError, start_shim

        rec = self.store.resolve(text)
        with self.lock(rec.id):
            rec = self.sync(rec)
            st.check(rec.status, "start", rec.name)
            cid, cfg = rec.id, rec.config
            from stackd.engine import containers_net

            containers_net.setup(self, rec)
            if not (self.bundle_dir(cid) / "config.json").exists() or not mounts.is_mountpoint(
                    self.bundle_dir(cid) / "rootfs"):
                self._build_bundle(rec)
            containers_net.publish(self, rec)
            containers_net.dns_ready(self, rec)
            self._drop_shim(cid, rec.runtime)
            hc = cfg.effective_healthcheck()
            restart = cfg.restart.name + (f":{cfg.restart.max_retries}"
                                          if cfg.restart.name == "on-failure" and cfg.restart.max_retries else "")
            rt = self.runtime(rec.runtime)
            shim_cfg = ShimConfig(
                id=cid, bundle=str(self.bundle_dir(cid)), runtime=rt.path, runtime_root=rt.root,
                log_path=str(self.log_path(cid)), log_max_size=cfg.log.max_size or 0,
                log_max_file=cfg.log.max_file, restart=restart, stdin=cfg.stdin_open,
                health=None if hc is None else {
                    "test": list(hc.test), "interval": hc.interval, "timeout": hc.timeout,
                    "retries": hc.retries, "start_period": hc.start_period,
                    "start_interval": hc.start_interval},
                stop_signal=signal_number(cfg.effective_stop_signal()), console_size=console_size,
                start_on_attach=on_attach,
            )
            crash_point("start:before-shim")
            try:
                client = start_shim(str(self.shim_dir(cid)), shim_cfg)
            except ShimError as exc:
                self._drop_shim(cid, rec.runtime)
                containers_net.unpublish(self, cid)
                self.store.update(cid, error=str(exc), exit_code=127 if "not found" in str(exc) or
                                  "no such file" in str(exc).lower() else 126)
                raise EngineError(str(exc)) from None
            crash_point("start:shim-started")
            s = client.state()
            if s.get("status") == "created":
                return rec  # running once attached (sync records it)
            return self.store.transition(
                cid, st.RUNNING, verb="start", pid=int(s.get("pid") or 0),  # type: ignore[call-overload]
                started_at=str(s.get("started_at") or ""), finished_at="", exit_code=None,
                oom_killed=0, error="", restart_count=0)

    def _client(self, cid: str) -> Any:
        from stackd.engine.shim.client import ShimClient

        return ShimClient(str(self.shim_dir(cid)))

    def _drop_shim(self, cid: str, runtime: str | None = None) -> None:
        """End a shim left over from a previous run and remove its directory."""
        from stackd.engine.shim.client import ShimError, probe

        d = self.shim_dir(cid)
        if not d.exists():
            return
        status = probe(str(d))
        if status.shim_alive:
            try:
                self._client(cid).shutdown(force=True)
            except ShimError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(status.shim_pid, _signal.SIGKILL)
        if status.shim_alive:
            from stackd.engine.containers_restore import _wait_gone

            _wait_gone(status.shim_pid)  # it may still write its last files
        if status.container != "missing":  # (probe: "missing" without a runtime call if its state is gone)
            self.runtime(runtime).delete(cid)
        shutil.rmtree(d, ignore_errors=True)

    def stop(self, text: str, *, timeout: float | None = None, signal: str | int | None = None) -> ContainerRecord:
        from stackd.engine.shim.client import ShimError

        rec = self.store.resolve(text)
        with self.lock(rec.id):
            rec = self.sync(rec)
            st.check(rec.status, "stop", rec.name)
            if rec.status not in st.LIVE:
                return rec
            if rec.status == st.PAUSED:
                with contextlib.suppress(EngineError):
                    self.runtime(rec.runtime).resume(rec.id)
            crash_point("stop:before")
            t = rec.config.stop_grace_period if timeout is None else timeout
            try:
                self._client(rec.id).stop(t, None if signal is None else signal_number(signal))
            except ShimError:
                pass  # the shim died meanwhile: sync reports what is left
            crash_point("stop:after-shim")
            rec = self.sync(self.store.get(rec.id))
            if rec.status not in st.LIVE:
                from stackd.engine import containers_net

                containers_net.unpublish(self, rec.id)
            return rec

    def kill(self, text: str, signal: str | int = "SIGKILL") -> ContainerRecord:
        from stackd.engine.shim.client import ShimError

        rec = self.get(text)
        st.check(rec.status, "kill", rec.name)
        sig = signal_number(signal)
        if rec.status == st.PAUSED and sig == 9:
            with contextlib.suppress(EngineError):
                self.runtime(rec.runtime).resume(rec.id)
        try:
            self._client(rec.id).kill(sig)
        except ShimError as exc:
            raise EngineError(f"cannot kill container {rec.name}: {exc}") from None
        return rec

    def restart(self, text: str, *, timeout: float | None = None) -> ContainerRecord:
        rec = self.stop(text, timeout=timeout)
        return self.start(rec.id)

    def wait(self, text: str, *, timeout: float | None = None) -> ContainerRecord:
        """Block until the container is no longer running; returns the record with its exit code."""
        from stackd.engine.shim.client import ShimError

        rec = self.get(text)
        deadline = None if timeout is None else time.monotonic() + timeout
        while rec.status in (*st.LIVE, st.CREATED):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if rec.status == st.CREATED:
                time.sleep(0.05)
            else:
                try:
                    self._client(rec.id).wait(left)
                except ShimError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise EngineError(f"timed out waiting for container {rec.name}") from None
            rec = self.sync(self.store.get(rec.id))
            if deadline is not None and time.monotonic() >= deadline and rec.status in st.LIVE:
                raise EngineError(f"timed out waiting for container {rec.name}")
        return rec

    def remove(self, text: str, *, force: bool = False, volumes: bool = False) -> ContainerRecord:
        """Remove the container and what it holds; `volumes` also removes its anonymous volumes."""
        rec = self.store.resolve(text)
        with self.lock(rec.id):
            rec = self.sync(rec)
            if rec.status in st.LIVE and not force:
                raise EngineError(f"cannot remove container {rec.name}: container is {rec.status}: "
                                  "stop the container before removing or force remove")
            st.check(rec.status, "remove -f" if force else "remove", rec.name)
            self.store.transition(rec.id, st.REMOVING, verb="remove")
            crash_point("rm:marked")
            self._release(rec.id, rec.runtime, volumes=volumes)
            crash_point("rm:released")
            self.store.delete(rec.id)
        with contextlib.suppress(OSError):
            os.unlink(self.run_root / "locks" / rec.id)
        return rec

    def _release(self, cid: str, runtime: str | None = None, *, volumes: bool = False) -> None:
        """Free everything a container holds except its record (idempotent; used by restore too)."""
        from stackd.engine import containers_net, containers_volumes, mounts

        self._drop_shim(cid, runtime)
        rt = self.runtime(runtime)
        if os.path.exists(os.path.join(rt.root, cid)) and rt.state(cid) is not None:
            rt.kill_all(cid, 9)
            rt.delete(cid)
        containers_net.teardown(self, cid)
        containers_volumes.release(self, cid, remove_anonymous=volumes)
        rootfs = self.bundle_dir(cid) / "rootfs"
        for _ in range(16):  # a runtime may have stacked mounts on it (propagation)
            if not mounts.is_mountpoint(rootfs):
                break
            try:
                mounts.unmount(rootfs)
            except OSError:
                mounts.unmount(rootfs, detach=True)
        with contextlib.suppress(NotFoundError):
            self.snapshots.remove(cid)
        remove_cgroup(self.cgroups_path(cid))
        shutil.rmtree(self.bundle_dir(cid), ignore_errors=True)
        shutil.rmtree(self.state_dir(cid), ignore_errors=True)


def _active_mount(snap: Any, cid: str, lowers: list[str]) -> Any:
    """The overlay mount data of active snapshot `cid` over `lowers` (its upper/work dirs exist)."""
    from stackd.engine.mounts import Mount

    adir = snap.root / "active" / cid
    if not lowers:
        return Mount("bind", str(adir / "upper"), "", ("rbind", "rw"))
    dirs = [str(snap.layer_dir(c) / "fs") for c in lowers]
    opts = snap._options(dirs, adir, False)
    if len(",".join(opts)) > 4095:
        opts = snap._options([snap._short(c) for c in lowers], adir, False)
    return Mount("overlay", "overlay", "", opts)
