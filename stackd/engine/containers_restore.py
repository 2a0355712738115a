"""Live-restore: records reconciled with their shims, and leftovers of a crashed engine cleaned.

`observe` is the one place a record learns the truth: from the shim's state when it answers;
when the shim is gone, from the runtime (a container left without its shim is killed and
reported exited, never running). `restore` runs when an engine starts: it finishes what a
crashed engine left half done (records `creating`/`removing` whose lock is free) and removes
bundles, rootfs mounts, snapshots, runtime state and cgroups that no record owns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

from stackd.engine import containers_state as st
from stackd.engine.containers_runtime import Runtime, cgroup_dirs, resolve_runtime
from stackd.engine.containers_store import ContainerRecord
from stackd.errors import EngineError

if TYPE_CHECKING:
    from stackd.engine.containers import ContainerManager

_ID = re.compile(r"^[0-9a-f]{64}$")


def _now() -> str:
    from stackd.engine.shim.logs import format_time

    return format_time(time.time())


def observe(mgr: ContainerManager, rec: ContainerRecord) -> ContainerRecord:
    """The record brought up to date from the shim (see the module docstring)."""
    from stackd.engine.shim.client import ShimClient, ShimError

    d = mgr.shim_dir(rec.id)
    if rec.status in st.INTERNAL or rec.status == st.DEAD:
        return rec
    if not (d / "shim.json").exists():
        if rec.status in st.LIVE:  # the run root was emptied (reboot) under a live record
            return mgr.store.transition(rec.id, st.EXITED, exit_code=rec.exit_code if rec.exit_code is not None else 255,
                                        error="the container's shim is gone", finished_at=_now(), pid=0)
        return rec
    try:
        s = ShimClient(str(d)).state()
    except ShimError:
        if not (d / "shim.json").exists():  # dropped meanwhile by another engine
            return mgr.store.get(rec.id)
        return _shim_died(mgr, rec)
    status = s.get("status")
    common: dict[str, Any] = {"restart_count": int(s.get("restart_count") or 0),  # type: ignore[call-overload]
                              "health": s.get("health")}
    if status == "running":
        new = st.PAUSED if rec.status == st.PAUSED else st.RUNNING
        if new == rec.status and rec.pid == s.get("pid") and rec.health == s.get("health") \
                and rec.restart_count == common["restart_count"]:
            return rec
        return mgr.store.transition(rec.id, new, pid=int(s.get("pid") or 0),  # type: ignore[call-overload]
                                    started_at=str(s.get("started_at") or ""), **common)
    if status == "restarting":
        if rec.status == st.RESTARTING and rec.restart_count == common["restart_count"]:
            return rec
        return mgr.store.transition(rec.id, st.RESTARTING, exit_code=s.get("exit_code"), pid=0,
                                    finished_at=str(s.get("finished_at") or ""), **common)
    if status == "exited":
        rec = mgr.store.transition(
            rec.id, st.EXITED, exit_code=s.get("exit_code"), oom_killed=int(bool(s.get("oom_killed"))),
            finished_at=str(s.get("finished_at") or _now()), pid=0, error=str(s.get("error") or ""),
            started_at=str(s.get("started_at") or rec.started_at), **common)
        _end_shim(mgr, rec.id)
        _unpublish(mgr, rec.id)
        return rec
    return rec  # "created": the shim is still launching it


def _unpublish(mgr: ContainerManager, cid: str) -> None:
    """A container that stopped holds no host port (Docker's behaviour)."""
    from stackd.engine.containers_net import unpublish

    with contextlib.suppress(Exception):
        unpublish(mgr, cid)


def _end_shim(mgr: ContainerManager, cid: str) -> None:
    """Shut an exited container's shim down (it keeps nothing the record lacks)."""
    from stackd.engine.shim.client import ShimError

    with mgr.lock(cid, blocking=False) as got:
        if not got and not mgr.holds(cid):
            return  # another process acts on it and will do this
        pid = _shim_pid(mgr, cid)
        try:
            mgr._client(cid).shutdown(force=False)
        except ShimError:
            return  # running again (a concurrent start): keep it
        _wait_gone(pid)  # it may still write its last files
        shutil.rmtree(mgr.shim_dir(cid), ignore_errors=True)


def _shim_pid(mgr: ContainerManager, cid: str) -> int:
    try:
        return int((mgr.shim_dir(cid) / "shim.pid").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _shim_died(mgr: ContainerManager, rec: ContainerRecord) -> ContainerRecord:
    from stackd.engine.shim.client import probe

    d = mgr.shim_dir(rec.id)
    status = probe(str(d))
    if status.shim_alive:  # slow to answer but alive: report what it last wrote
        return rec
    rt = mgr.runtime(rec.runtime)
    last = status.state
    code: Any = last.get("exit_code") if last.get("status") == "exited" else None
    error = "the container's shim died"
    if status.container in ("running", "paused", "created", "creating"):
        if status.container == "paused":
            with contextlib.suppress(EngineError):
                rt.resume(rec.id)
        rt.kill_all(rec.id, 9)
        _wait_gone(status.container_pid)
        code, error = 137, "the container's shim died; the container was killed"
    if status.container != "missing":
        rt.delete(rec.id)
    shutil.rmtree(d, ignore_errors=True)
    rec = mgr.store.transition(rec.id, st.EXITED, exit_code=255 if code is None else code, error=error,
                               finished_at=_now(), pid=0)
    _unpublish(mgr, rec.id)
    return rec


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until process `pid` has exited (a pidfd polls readable then; no sleeping), at most `timeout`."""
    if pid <= 0:
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1  # gone already (ESRCH), or no pidfd support: poll /proc below
    if fd >= 0:
        import select

        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            p.poll(timeout * 1000)
        finally:
            os.close(fd)
        return
    end = time.monotonic() + timeout
    while pid > 0 and time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return
        except OSError:
            return
        time.sleep(0.005)


def restore(mgr: ContainerManager) -> list[str]:
    """Finish or undo unfinished records and clean what no record owns; returns what was cleaned.

    Live records are not probed here: every read of a record (`sync`) does that."""
    lock = os.open(mgr.run_root / "restore.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # another engine is restoring right now
        return _restore(mgr)
    finally:
        os.close(lock)


def _listdir(path: Any) -> set[str]:
    try:
        return {n for n in os.listdir(path) if _ID.match(n)}
    except FileNotFoundError:
        return set()


def _restore(mgr: ContainerManager) -> list[str]:
    cleaned: list[str] = []
    rt_dirs = {name: _listdir(mgr.run_root / "runtime" / name) for name in _listdir_any(mgr.run_root / "runtime")}
    on_disk = _listdir(mgr.run_root / "containers") | _listdir(mgr.run_root / "shims")
    snaps = {k for k in mgr.snapshots.active() if _ID.match(k)} if (mgr.state_root / "snapshots").exists() else set()
    cgroups = {c for d in cgroup_dirs(mgr.cgroup_parent) for c in _listdir(d)}
    recs = mgr.store.list(internal=True)  # read after listing: a new container is recorded first
    ids = {r.id for r in recs}
    for r in recs:
        if r.status in st.INTERNAL:
            with mgr.lock(r.id, blocking=False) as got:
                if got:
                    mgr._release(r.id)
                    mgr.store.delete(r.id)
                    cleaned.append(f"unfinished {r.status} {r.id[:12]}")
    for cid in (on_disk | snaps | cgroups) - ids:
        with mgr.lock(cid, blocking=False) as got:
            if got and cid not in mgr.store.ids():
                mgr._release(cid)
                cleaned.append(f"orphan {cid[:12]}")
        with contextlib.suppress(OSError):
            os.unlink(mgr.run_root / "locks" / cid)
    from stackd.engine import containers_net

    cleaned += containers_net.orphans(mgr)
    containers_net.restore_networks(mgr)
    for name, cids in rt_dirs.items():
        for cid in cids - ids:
            try:
                path = resolve_runtime(name)
            except EngineError:
                continue
            rt = Runtime(name, path, str(mgr.run_root / "runtime" / name))
            rt.kill_all(cid, 9)
            rt.delete(cid)
            cleaned.append(f"runtime state {cid[:12]}")
    return cleaned


def _listdir_any(path: Any) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()
