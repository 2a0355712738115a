"""The container verbs beyond the lifecycle: exec, logs, attach, top, stats, pause, rename, inspect.

A mixin of `ContainerManager` (which provides records, locks, shims and the runtime).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackd.engine import containers_state as st
from stackd.engine.containers_runtime import cgroup_stats
from stackd.engine.containers_store import ContainerRecord
from stackd.errors import EngineError

if TYPE_CHECKING:
    from stackd.engine.containers_runtime import Runtime
    from stackd.engine.containers_store import ContainerStore


class ContainerOps:
    """exec, logs, attach, top, stats, pause/unpause, rename, inspect."""

    if TYPE_CHECKING:
        store: ContainerStore

        def get(self, text: str) -> ContainerRecord: ...
        def sync(self, rec: ContainerRecord) -> ContainerRecord: ...
        def runtime(self, name: str | None = None) -> Runtime: ...
        def _client(self, cid: str) -> Any: ...
        def lock(self, cid: str, *, blocking: bool = True) -> contextlib.AbstractContextManager[bool]: ...
        def log_path(self, cid: str) -> Path: ...
        def cgroups_path(self, cid: str) -> str: ...
        def bundle_dir(self, cid: str) -> Path: ...
        def shim_dir(self, cid: str) -> Path: ...

    def exec(self, text: str, args: list[str], *, tty: bool = False, stdin: bool = False,
             env: list[str] | None = None, cwd: str | None = None, user: str | None = None,
             rows: int = 0, cols: int = 0) -> Any:
        """Start `args` in the running container; returns the shim's Stream (exit code at its end)."""
        from stackd.engine.shim.client import ShimError

        rec = self.get(text)
        st.check(rec.status, "exec", rec.name)
        if not args:
            raise EngineError("exec needs a command")
        if user and not all(p.isdigit() for p in user.split(":")):
            from stackd.engine.bundle_user import UserDb, resolve_user

            u = resolve_user(UserDb.from_rootfs(self.bundle_dir(rec.id) / "rootfs", rec.image), user,
                             image=rec.image)
            user = f"{u.uid}:{u.gid}"
        try:
            return self._client(rec.id).exec(args, tty=tty, stdin=stdin, env=env, cwd=cwd, user=user,
                                              rows=rows, cols=cols)
        except ShimError as exc:
            raise EngineError(f"exec in container {rec.name}: {exc}") from None

    def exec_run(self, text: str, args: list[str], *, timeout: float | None = 60.0,
                 **kw: Any) -> tuple[int | None, bytes, bytes]:
        with self.exec(text, args, **kw) as s:
            return s.collect(timeout)  # type: ignore[no-any-return]

    def attach(self, text: str, *, stdin: bool = False) -> Any:
        from stackd.engine.shim.client import ShimError

        rec = self.get(text)
        if rec.status not in st.LIVE:
            raise EngineError(f"you cannot attach to a stopped container {rec.name}, start it first")
        try:
            return self._client(rec.id).attach(stdin=stdin)
        except ShimError as exc:
            raise EngineError(f"attach to container {rec.name}: {exc}") from None

    def logs(self, text: str, *, follow: bool = False, tail: int | None = None, since_ns: int = 0,
             stop: Callable[[], bool] | None = None, poll: float = 0.05) -> Iterator[Any]:
        """The container's log records (shim.logs.LogRecord), following until it stops with `follow`."""
        from stackd.engine.shim.logs import follow_logs, read_logs

        rec = self.get(text)
        path = str(self.log_path(rec.id))
        if not follow:
            yield from read_logs(path, tail=tail, since_ns=since_ns)
            return
        seen_exit = [False]

        def done() -> bool:
            if stop is not None and stop():
                return True
            if seen_exit[0]:
                return True  # one more read after the exit was seen: nothing is lost
            cur = self.sync(self.store.get(rec.id))
            if cur.status not in st.LIVE:
                seen_exit[0] = True
            return False

        yield from follow_logs(path, tail=tail, since_ns=since_ns, stop=done, poll=poll)

    def top(self, text: str) -> tuple[list[str], list[list[str]]]:
        """Docker's default `top` columns for the container's processes."""
        rec = self.get(text)
        st.check(rec.status, "top", rec.name)
        pids = self.runtime(rec.runtime).ps(rec.id)
        rows = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            fields = stat.rsplit(b")", 1)[1].split()
            comm = stat.split(b"(", 1)[1].rsplit(b")", 1)[0].decode(errors="replace")
            utime, stime = int(fields[11]), int(fields[12])
            secs = (utime + stime) // os.sysconf("SC_CLK_TCK")
            rows.append([_user(uid), str(pid), fields[1].decode(), "0", "-", "?",
                         f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}", cmd or f"[{comm}]"])
        return ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows

    def stats(self, text: str, *, interval: float = 0.0) -> dict[str, Any]:
        """Memory, CPU and pids from the cgroup files; CPU percent over `interval` seconds."""
        rec = self.get(text)
        path = self.cgroups_path(rec.id)
        a = cgroup_stats(path)
        cpu_pct = 0.0
        if interval > 0 and rec.status in st.LIVE:
            t0 = time.monotonic()
            time.sleep(interval)
            b = cgroup_stats(path)
            cpu_pct = 100.0 * (b["cpu_usage_ns"] - a["cpu_usage_ns"]) / ((time.monotonic() - t0) * 1e9)
            a = b
        limit = a["memory_limit"] or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return {"ID": rec.id, "Name": rec.name, "CPUPerc": round(cpu_pct, 2), "CPUUsageNs": a["cpu_usage_ns"],
                "MemUsage": a["memory_usage"], "MemLimit": limit,
                "MemPerc": round(100.0 * a["memory_usage"] / limit, 2) if limit else 0.0, "PIDs": a["pids"]}

    def pause(self, text: str) -> ContainerRecord:
        rec = self.get(text)
        with self.lock(rec.id):
            rec = self.sync(self.store.get(rec.id))
            st.check(rec.status, "pause", rec.name)
            self.runtime(rec.runtime).pause(rec.id)
            return self.store.transition(rec.id, st.PAUSED, verb="pause")

    def unpause(self, text: str) -> ContainerRecord:
        rec = self.get(text)
        with self.lock(rec.id):
            rec = self.sync(self.store.get(rec.id))
            st.check(rec.status, "unpause", rec.name)
            self.runtime(rec.runtime).resume(rec.id)
            return self.store.transition(rec.id, st.RUNNING, verb="unpause")

    def rename(self, text: str, new_name: str) -> ContainerRecord:
        rec = self.get(text)
        if not new_name or not new_name[0].isalnum() or not all(c.isalnum() or c in "_.-" for c in new_name):
            raise EngineError(f"invalid container name {new_name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        self.store.rename(rec.id, new_name)
        net = getattr(self, "net", None)
        if net is not None and rec.name != new_name:
            net.rename(rec.id, rec.name, new_name)
        return self.store.get(rec.id)

    def ports(self, text: str) -> list[Any]:
        """The container's published ports (stackd.net.ports.PortBinding)."""
        from stackd.engine.containers_net import _net_state_mentions

        rec = self.get(text)
        net = getattr(self, "net", None)
        if not _net_state_mentions(self, rec.id) or net is None:  # type: ignore[arg-type]
            return []
        return list(net.published(rec.id))

    def _net_settings(self, rec: ContainerRecord) -> dict[str, Any]:
        return _net_settings(self, rec)

    def inspect(self, text: str) -> dict[str, Any]:
        """A Docker-shaped description of the container."""
        import dataclasses

        rec = self.get(text)
        cfg = rec.config
        health = rec.health
        return {
            "Id": rec.id, "Name": "/" + rec.name, "Created": _rfc3339(rec.created_at),
            "Path": (cfg.entrypoint or cfg.image_config.entrypoint or (cfg.command or cfg.image_config.cmd or ("",)))[0],
            "Image": rec.image_id, "Driver": "overlay",
            "State": {
                "Status": rec.status, "Running": rec.status in st.LIVE, "Paused": rec.status == st.PAUSED,
                "Restarting": rec.status == st.RESTARTING, "OOMKilled": rec.oom_killed,
                "Dead": rec.status == st.DEAD, "Pid": rec.pid if rec.status in st.LIVE else 0,
                "ExitCode": rec.exit_code or 0, "Error": rec.error, "StartedAt": rec.started_at,
                "FinishedAt": rec.finished_at, **({"Health": health} if health else {}),
            },
            "RestartCount": rec.restart_count,
            "LogPath": str(self.log_path(rec.id)),
            "HostConfig": {"Runtime": rec.runtime, "RestartPolicy": {"Name": cfg.restart.name,
                                                                     "MaximumRetryCount": cfg.restart.max_retries},
                           "Privileged": cfg.privileged, "ReadonlyRootfs": cfg.read_only,
                           "Memory": cfg.resources.memory or 0, "NanoCpus": int((cfg.resources.cpus or 0) * 1e9),
                           "PidsLimit": cfg.resources.pids_limit, "CapAdd": list(cfg.cap_add),
                           "CapDrop": list(cfg.cap_drop), "Init": cfg.init,
                           "NetworkMode": cfg.network_mode or (
                               cfg.networks[0].network if cfg.networks else "none"),
                           "PortBindings": {p.split("/")[0]: p for p in map(str, cfg.ports)}},
            "Config": {"Hostname": cfg.hostname or rec.id[:12], "User": cfg.user, "Env": list(cfg.env),
                       "Cmd": list(cfg.command) if cfg.command is not None else cfg.image_config.cmd,
                       "Entrypoint": list(cfg.entrypoint) if cfg.entrypoint is not None else cfg.image_config.entrypoint,
                       "Image": rec.image, "WorkingDir": cfg.working_dir, "Labels": dict(cfg.labels),
                       "Tty": cfg.tty, "OpenStdin": cfg.stdin_open, "StopSignal": cfg.effective_stop_signal(),
                       "StopTimeout": cfg.stop_grace_period},
            "Mounts": [dataclasses.asdict(m) for m in cfg.mounts],
            "NetworkSettings": self._net_settings(rec),
            "GraphDriver": {"Name": "overlay", "Data": {"MergedDir": str(self.bundle_dir(rec.id) / "rootfs")}},
        }


def _net_settings(mgr: Any, rec: ContainerRecord) -> dict[str, Any]:
    """Docker's NetworkSettings: per-network endpoints and the published ports."""
    from stackd.engine.containers_net import _net_state_mentions, netns_path

    nets: dict[str, Any] = {}
    ports: dict[str, Any] = {}
    if _net_state_mentions(mgr, rec.id) and mgr.net is not None:
        for a in mgr.net.attachments(rec.id):
            nets[a.network] = {"IPAddress": a.ipv4, "IPPrefixLen": a.prefix4, "GlobalIPv6Address": a.ipv6,
                               "GlobalIPv6PrefixLen": a.prefix6, "MacAddress": a.mac,
                               "Aliases": list(a.aliases), "DNSNames": list(a.names)}
        for p in mgr.net.published(rec.id):
            ports.setdefault(f"{p.container_port}/{p.protocol}", []).append(
                {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)})
    first: dict[str, Any] = next(iter(nets.values()), {})
    path = netns_path(mgr, rec.id)
    return {"SandboxKey": str(path) if path.exists() else "", "IPAddress": first.get("IPAddress", ""),
            "Networks": nets, "Ports": ports}


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
