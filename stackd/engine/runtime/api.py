"""The runtime as a library: create/start/run/exec/kill/delete/state from a warm process (fork, no exec).

The CLI is a thin layer over these functions; stackd's shim may call them in-process. Errors are
`stackd.errors.RuntimeSpecError` (naming container, step and errno) or `ContainerStateError`.
"""

from __future__ import annotations

import os

from stackd.engine.runtime import config, container
from stackd.engine.runtime.container import Container, require
from stackd.engine.runtime.state import StateDir, StateError, list_ids, proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

FORWARDED = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH
SECCOMP_CACHE = "@seccomp-cache"  # under --root; "@" is not allowed in container ids


def stderr_warn(msg: str) -> None:
    os.write(2, f"stackd-runtime: warning: {msg}\n".encode())


def _sys(sys: Syscalls | None) -> Syscalls:
    if sys is not None:
        return sys
    from stackd.engine.runtime.linux import LinuxSyscalls

    return LinuxSyscalls()


def translate(cid: str, verb: str, e: BaseException) -> BaseException:
    """Turn an internal failure into the RuntimeSpecError the user sees."""
    from stackd.engine.runtime.namespaces import ChildError
    from stackd.errors import RuntimeSpecError, StackdError

    if isinstance(e, StackdError):
        return e
    if isinstance(e, ChildError):
        msg = f"container {cid}: {verb}: {e.step}: {e.message}" + (f" (errno {e.errno})" if e.errno else "")
    elif isinstance(e, OSError):
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename and str(e.filename) not in str(e.strerror) else "")
        msg = f"container {cid}: {verb}: {what}" + (f" (errno {e.errno})" if e.errno else "")
    else:
        msg = f"container {cid}: {verb}: {e}"
    err = RuntimeSpecError(msg)
    err.errno = getattr(e, "errno", 0) or getattr(e, "code", 0)  # type: ignore[attr-defined]
    return err


# Devices every container may use besides the defaults `cgroups_v1.write_devices` appends itself
# (null, zero, full, random, urandom, tty, console, ptmx, pts, mknod of any): /dev/net/tun, as runc.
DEFAULT_ALLOW = [("c", 10, 200, "rwm")]


def with_default_devices(resources: dict[str, object], devices: list[dict[str, object]] | None) -> dict[str, object]:
    """linux.resources with /dev/net/tun and the configured devices allowed after the config's rules."""
    rules = list(resources.get("devices") or [])  # type: ignore[call-overload]
    if not rules:
        return resources
    for t, ma, mi, acc in DEFAULT_ALLOW:
        rules.append({"allow": True, "type": t, "major": ma, "minor": mi, "access": acc})
    for d in devices or []:
        rules.append({"allow": True, "type": d.get("type", "c"), "major": d.get("major"), "minor": d.get("minor"),
                      "access": "rwm"})
    for r in rules:
        for k in ("major", "minor"):
            if r.get(k) is None:
                r.pop(k, None)
    return dict(resources, devices=rules)


def _host_id(maps: object, cid: int) -> int:
    for m in maps or []:  # type: ignore[attr-defined]
        if m["containerID"] <= cid < m["containerID"] + m["size"]:
            return int(m["hostID"] + cid - m["containerID"])
    return 0


def _listen_fds() -> int:
    n = os.environ.get("LISTEN_FDS")
    if not n or os.environ.get("LISTEN_PID", str(os.getpid())) != str(os.getpid()):
        return 0
    return int(n) if n.isdigit() else 0


def create(root: str, cid: str, bundle: str, *, pid_file: str | None = None, console_socket: str | None = None,
           no_pivot: bool = False, preserve_fds: int = 0, stdio: tuple[int, int, int] | None = None,
           warn: Callable[[str], None] | None = None, sys: Syscalls | None = None) -> int:
    """Create the container: everything set up, its process blocked before exec. Returns its pid."""
    made = _create(root, cid, bundle, pid_file=pid_file, console_socket=console_socket, no_pivot=no_pivot,
                   preserve_fds=preserve_fds, stdio=stdio, warn=warn or stderr_warn, sys=sys)
    made.sd.unlock()
    return made.pid


class _Created:
    """What `_create` leaves for `run`: the locked state directory, its data and the cgroup."""

    def __init__(self, pid: int, sd: StateDir, data: dict[str, object], cg: object | None) -> None:
        self.pid, self.sd, self.data, self.cg = pid, sd, data, cg


def _create(root: str, cid: str, bundle: str, *, pid_file: str | None = None, console_socket: str | None = None,
            no_pivot: bool = False, preserve_fds: int = 0, stdio: tuple[int, int, int] | None = None,
            warn: Callable[[str], None] = stderr_warn, sys: Syscalls | None = None,
            subreaper_first: bool = False) -> _Created:
    """`create`, returning with the state directory still locked (the caller unlocks it)."""
    from stackd.engine.runtime import cgroups_warm

    cgroups_warm.start()
    bundle = os.path.abspath(bundle)
    cfg = config.load(bundle, warn)
    proc: dict[str, object] = cfg.get("process")  # type: ignore[assignment]
    if not proc:
        raise config.ConfigError(f"{bundle}/config.json: process is required to create a container")
    linux: dict[str, object] = cfg.get("linux") or {}  # type: ignore[assignment]
    nss: list[dict[str, str]] = linux.get("namespaces") or []  # type: ignore[assignment]
    new = {ns["type"] for ns in nss if not ns.get("path")}  # namespaces.plan, without importing it yet
    join = {ns["type"]: ns["path"] for ns in nss if ns.get("path")}
    if "mount" not in new:
        raise config.ConfigError(f"{bundle}/config.json: linux.namespaces: a new mount namespace is required")
    sd = StateDir(root, cid)
    sd.create()
    sd.lock()
    fds: list[int] = []
    cg, sock, chan, ok = None, None, None, False
    try:
        os.mkfifo(sd.fifo, 0o622)
        os.chmod(sd.fifo, 0o622)
        if "user" in new:  # the container's root opens it (runc chowns it the same way)
            os.chown(sd.fifo, _host_id(linux.get("uidMappings"), 0), _host_id(linux.get("gidMappings"), 0))
        mod = container.cgroups_module()
        if mod is not None:  # created once the process exists (`drive`): mkdir waits behind the warm-up
            cg = mod.open_cgroup(linux.get("cgroupsPath"), cid)  # type: ignore[attr-defined]
        from stackd.engine.runtime import namespaces, process

        sysc = _sys(sys)
        if subreaper_first:
            subreaper(sysc)
        smod = container.seccomp_module() if linux.get("seccomp") else None
        prepared = smod.prepare(linux.get("seccomp"), warn=warn,  # type: ignore[attr-defined]
                                cache_dir=os.path.join(root, SECCOMP_CACHE)) if smod is not None else None
        if proc.get("terminal"):
            if not console_socket:
                raise config.ConfigError("process.terminal is true: --console-socket is required")
            from stackd.engine.runtime import console

            sock = console.connect(console_socket)
        helper = process.sealed_helper()
        fds.append(helper)
        fifo_fd = os.open(sd.fifo, os.O_PATH | os.O_CLOEXEC)
        fds.append(fifo_fd)
        listen = _listen_fds()
        if listen:
            env: list[str] = list(proc.get("env") or [])  # type: ignore[call-overload]
            proc = dict(proc, env=[*env, f"LISTEN_FDS={listen}", "LISTEN_PID=1"])
        data: dict[str, object] = {
            "id": cid, "status": "creating", "creator": os.getpid(), "bundle": bundle,
            "rootfs": config.rootfs_path(bundle, cfg), "created": container._now(),
            "annotations": cfg.get("annotations") or {}, "hooks": cfg.get("hooks") or {},
            "cgroup_paths": cg.paths() if cg is not None else None,
        }
        launch = process.Launch(sysc, cfg, proc, bundle=bundle, rootfs=str(data["rootfs"]), new=new,
                                fifo_fd=fifo_fd, helper_fd=helper, seccomp=prepared, console=sock,
                                keep_fds=preserve_fds + listen, no_pivot=no_pivot,
                                cgroup_paths=data["cgroup_paths"], stdio=stdio)  # type: ignore[arg-type]
        launch.close_in_child.append(sd.lock_fd)
        if "user" in new:  # in its user namespace the process may not read the host's stdlib: import now
            process.preimport(proc, cfg)
        chan = namespaces.Channel()

        def while_waiting() -> None:
            """What can wait until the process runs (it sets up its mounts meanwhile)."""
            sd.save(data)
            if cg is not None:
                cg.preload()
            import select  # noqa: F401  (start)

        def on_hooks(pid: int) -> str:
            from stackd.engine.runtime import hooks

            state = config.dumps({"ociVersion": cfg["ociVersion"], "id": cid, "status": "creating",
                                  "pid": pid, "bundle": bundle, "annotations": data["annotations"]})
            hooks.run_hooks(cfg, "prestart", state)
            hooks.run_hooks(cfg, "createRuntime", state)
            return state

        pid1, pid = container.spawn(sysc, chan, launch, join, linux.get("timeOffsets"))  # type: ignore[arg-type]
        pid = container.drive(chan, pid1, linux, cg, warn, on_hooks, create_cgroup=True, pid=pid,
                              while_waiting=while_waiting)
        if cg is not None and linux.get("resources"):  # after the devices exist, before exec (as runc)
            cg.apply(with_default_devices(linux["resources"], linux.get("devices")))  # type: ignore[arg-type]
        st = proc_start_time(pid)
        data.update(status="created", pid=pid, start_time=st[1] if st else 0)
        sd.save(data)
        if pid_file:
            container._write_pid_file(pid_file, pid)
        ok = True
        return _Created(pid, sd, data, cg)
    finally:
        for fd in fds:
            os.close(fd)
        if sock is not None:
            sock.close()  # type: ignore[attr-defined]
        if chan is not None:
            chan.close()
        cgroups_warm.reap(block=False)
        if not ok:
            if cg is not None:
                try:
                    cg.destroy()
                except Exception as e:
                    warn(f"removing cgroup: {e}")
            sd.remove()
            sd.unlock()


def start(root: str, cid: str, warn: Callable[[str], None] | None = None) -> None:
    """Release the created container's process to exec the user program."""
    c = Container(root, cid)
    with c.sd:
        require(c.status(), "start", cid)
        _release(c.sd, c.data, warn or stderr_warn)


def _release(sd: StateDir, data: dict[str, object], warn: Callable[[str], None]) -> None:
    """Open the exec fifo (the process waits on it), record the start, run poststart hooks."""
    import select

    pid = int(data["pid"])  # type: ignore[call-overload]
    fd = os.open(sd.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    pidfd = os.pidfd_open(pid)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        p.register(pidfd, select.POLLIN)
        while True:
            ready = dict(p.poll(10000))
            if fd in ready and os.read(fd, 1):
                break
            if pidfd in ready or not ready:
                from stackd.engine.runtime.namespaces import ChildError

                raise ChildError("start", "the container process exited before it was started")
    finally:
        os.close(fd)
        os.close(pidfd)
    os.unlink(sd.fifo)
    data["started"] = container._now()
    sd.save(data)
    if data.get("hooks"):
        from stackd.engine.runtime import hooks

        if hooks.has_hooks(data, "poststart"):
            try:
                hooks.run_hooks(data, "poststart", config.dumps(_oci_state(sd, data, "running")))
            except hooks.HookError as e:
                warn(str(e))


def _oci_state(sd: StateDir, data: dict[str, object], status: str) -> dict[str, object]:
    c = Container.__new__(Container)
    c.sd, c.id, c.data = sd, sd.id, data
    return c.oci_state(status)


def state(root: str, cid: str) -> dict[str, object]:
    """The OCI state of a container."""
    return Container(root, cid).oci_state()


def list_states(root: str) -> list[dict[str, object]]:
    out = []
    for cid in list_ids(root):
        try:
            out.append(Container(root, cid).oci_state())
        except StateError:
            continue
    return out


def kill(root: str, cid: str, sig: int = 15, all_processes: bool = False) -> None:
    c = Container(root, cid)
    require(c.status(), "kill", cid)
    c.signal(sig, all_processes)


def delete(root: str, cid: str, force: bool = False, warn: Callable[[str], None] | None = None) -> None:
    """Delete a stopped (or created) container; --force kills a running one first."""
    warn = warn or stderr_warn
    c = Container(root, cid)
    with c.sd:
        status = c.status()
        if not force:
            require(status, "delete", cid)
        if status != "stopped":
            c.signal(9, all_processes=True)
            if not container.wait_gone(c.pid, int(c.data.get("start_time") or 0), 10.0):  # type: ignore[call-overload]
                from stackd.engine.runtime.namespaces import ChildError

                raise ChildError("delete", f"process {c.pid} did not exit after SIGKILL")
            try:
                os.waitpid(c.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        c.destroy(warn)


def pause(root: str, cid: str) -> None:
    c = Container(root, cid)
    with c.sd:
        require(c.status(), "pause", cid)
        cg = c.cgroup()
        if cg is None:
            from stackd.engine.runtime.namespaces import ChildError

            raise ChildError("pause", "no cgroup freezer for this container")
        cg.freeze()  # type: ignore[attr-defined]
        c.data["paused"] = True
        c.save()


def resume(root: str, cid: str) -> None:
    c = Container(root, cid)
    with c.sd:
        require(c.status(), "resume", cid)
        cg = c.cgroup()
        assert cg is not None
        cg.thaw()  # type: ignore[attr-defined]
        c.data["paused"] = False
        c.save()


def pids(root: str, cid: str) -> list[int]:
    c = Container(root, cid)
    require(c.status(), "ps", cid)
    cg = c.cgroup()
    return sorted(cg.pids()) if cg is not None else [c.pid]  # type: ignore[attr-defined]


def wait_child(pid: int, cg: object | None = None) -> tuple[int, bool]:
    """Wait for our (or our subreaper's) child, forwarding signals; (exit code, OOM-killed)."""
    import _signal

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    old = {s: _signal.signal(s, forward) for s in FORWARDED}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for s, h in old.items():
            _signal.signal(s, h)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    oom = bool(cg is not None and code == 137 and cg.oom_killed())  # type: ignore[attr-defined]
    return code, oom


def subreaper(sys: Syscalls | None = None) -> None:
    """Become the subreaper so a foreground container process can be waited for."""
    from stackd.engine.runtime import syscalls as sc

    _sys(sys).prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def run(root: str, cid: str, bundle: str, *, detach: bool = False, keep: bool = False,
        warn: Callable[[str], None] | None = None, sys: Syscalls | None = None, **create_opts: object) -> int:
    """create + start; in the foreground wait and return the exit status (then delete unless keep)."""
    warn = warn or stderr_warn
    made = _create(root, cid, bundle, warn=warn, sys=sys, subreaper_first=not detach, **create_opts)  # type: ignore[arg-type]
    try:
        _release(made.sd, made.data, warn)
    except BaseException:
        made.sd.unlock()
        delete(root, cid, force=True, warn=warn)
        raise
    made.sd.unlock()
    if detach:
        return 0
    code, oom = wait_child(made.pid, made.cg)
    c = Container.__new__(Container)
    c.sd, c.id, c.data = made.sd, cid, made.data
    c.data.update(exitStatus=code, oomKilled=oom)
    if keep:
        with c.sd:
            c.save()
    else:
        with c.sd:
            c.destroy(warn, made.cg)
    return code
