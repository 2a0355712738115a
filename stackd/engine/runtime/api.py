"""The runtime as a library: create/start/run/exec/kill/delete/state from a warm process (fork, no exec).

The CLI is a thin layer over these functions; stackd's shim may call them in-process. Errors are
`stackd.errors.RuntimeSpecError` (naming container, step and errno) or `ContainerStateError`.
"""

from __future__ import annotations

import os

from stackd.engine.runtime import config, container, namespaces, process
from stackd.engine.runtime.container import Container, require
from stackd.engine.runtime.state import StateDir, StateError, list_ids, proc_start_time
from stackd.engine.runtime.syscalls import NAMESPACES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

FORWARDED = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH


def stderr_warn(msg: str) -> None:
    os.write(2, f"stackd-runtime: warning: {msg}\n".encode())


def _sys(sys: Syscalls | None) -> Syscalls:
    if sys is not None:
        return sys
    from stackd.engine.runtime.linux import LinuxSyscalls

    return LinuxSyscalls()


def translate(cid: str, verb: str, e: BaseException) -> BaseException:
    """Turn an internal failure into the RuntimeSpecError the user sees."""
    from stackd.errors import RuntimeSpecError, StackdError

    if isinstance(e, StackdError):
        return e
    if isinstance(e, namespaces.ChildError):
        msg = f"container {cid}: {verb}: {e.step}: {e.message}" + (f" (errno {e.errno})" if e.errno else "")
    elif isinstance(e, OSError):
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename and str(e.filename) not in str(e.strerror) else "")
        msg = f"container {cid}: {verb}: {what}" + (f" (errno {e.errno})" if e.errno else "")
    else:
        msg = f"container {cid}: {verb}: {e}"
    err = RuntimeSpecError(msg)
    err.errno = getattr(e, "errno", 0) or getattr(e, "code", 0)  # type: ignore[attr-defined]
    return err


# Devices every container may use, as runc allows them (besides linux.devices).
DEFAULT_ALLOW = [("c", None, None, "m"), ("b", None, None, "m"), ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
                 ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
                 ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"), ("c", 10, 200, "rwm")]


def with_default_devices(resources: dict[str, object], devices: list[dict[str, object]] | None) -> dict[str, object]:
    """linux.resources with the default and configured devices allowed after the config's rules."""
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
    warn = warn or stderr_warn
    bundle = os.path.abspath(bundle)
    cfg = config.load(bundle, warn)
    proc: dict[str, object] = cfg.get("process")  # type: ignore[assignment]
    if not proc:
        raise config.ConfigError(f"{bundle}/config.json: process is required to create a container")
    linux: dict[str, object] = cfg.get("linux") or {}  # type: ignore[assignment]
    new, join = namespaces.plan(linux.get("namespaces") or [])  # type: ignore[arg-type]
    if "mount" not in new:
        raise config.ConfigError(f"{bundle}/config.json: linux.namespaces: a new mount namespace is required")
    sysc = _sys(sys)
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
        if mod is not None:
            cg = mod.open_cgroup(linux.get("cgroupsPath"), cid)  # type: ignore[attr-defined]
            cg.create()
        smod = container.seccomp_module() if linux.get("seccomp") else None
        prepared = smod.prepare(linux.get("seccomp")) if smod is not None else None  # type: ignore[attr-defined]
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
        sd.save(data)
        launch = process.Launch(sysc, cfg, proc, bundle=bundle, rootfs=str(data["rootfs"]), new=new,
                                fifo_fd=fifo_fd, helper_fd=helper, seccomp=prepared, console=sock,
                                keep_fds=preserve_fds + listen, no_pivot=no_pivot,
                                cgroup_paths=data["cgroup_paths"], stdio=stdio)  # type: ignore[arg-type]
        launch.close_in_child.append(sd.lock_fd)
        process.preimport(proc, cfg)
        chan = namespaces.Channel()

        def on_hooks(pid: int) -> str:
            from stackd.engine.runtime import hooks

            state = config.dumps({"ociVersion": cfg["ociVersion"], "id": cid, "status": "creating",
                                            "pid": pid, "bundle": bundle, "annotations": data["annotations"]})
            hooks.run_hooks(cfg, "prestart", state)
            hooks.run_hooks(cfg, "createRuntime", state)
            return state

        pid1 = container.spawn(sysc, chan, launch, join, linux.get("timeOffsets"))  # type: ignore[arg-type]
        pid = container.drive(chan, pid1, linux, cg, warn, on_hooks)
        if cg is not None and linux.get("resources"):  # after the devices exist, before exec (as runc)
            cg.apply(with_default_devices(linux["resources"], linux.get("devices")))  # type: ignore[arg-type]
        st = proc_start_time(pid)
        data.update(status="created", pid=pid, start_time=st[1] if st else 0)
        sd.save(data)
        if pid_file:
            container._write_pid_file(pid_file, pid)
        ok = True
        return pid
    finally:
        for fd in fds:
            os.close(fd)
        if sock is not None:
            sock.close()  # type: ignore[attr-defined]
        if chan is not None:
            chan.close()
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
    import select

    warn = warn or stderr_warn
    c = Container(root, cid)
    with c.sd:
        require(c.status(), "start", cid)
        fd = os.open(c.sd.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        pidfd = os.pidfd_open(c.pid)
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            p.register(pidfd, select.POLLIN)
            while True:
                ready = dict(p.poll(10000))
                if fd in ready and os.read(fd, 1):
                    break
                if pidfd in ready or not ready:
                    raise namespaces.ChildError("start", "the container process exited before it was started")
        finally:
            os.close(fd)
            os.close(pidfd)
        os.unlink(c.sd.fifo)
        c.data["started"] = container._now()
        c.save()
        from stackd.engine.runtime import hooks

        try:
            hooks.run_hooks(c.data, "poststart", config.dumps(c.oci_state("running")))
        except hooks.HookError as e:
            warn(str(e))


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
                raise namespaces.ChildError("delete", f"process {c.pid} did not exit after SIGKILL")
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
            raise namespaces.ChildError("pause", "no cgroup freezer for this container")
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
    if not detach:
        subreaper(sys)
    pid = create(root, cid, bundle, warn=warn, sys=sys, **create_opts)  # type: ignore[arg-type]
    try:
        start(root, cid, warn)
    except BaseException:
        delete(root, cid, force=True, warn=warn)
        raise
    if detach:
        return 0
    c = Container(root, cid)
    code, oom = wait_child(pid, c.cgroup())
    c.data.update(exitStatus=code, oomKilled=oom)
    if keep:
        c.save()
    else:
        delete(root, cid, force=True, warn=warn)
    return code


def exec_process(root: str, cid: str, proc: dict[str, object], *, detach: bool = False,
                 pid_file: str | None = None, console_socket: str | None = None, preserve_fds: int = 0,
                 warn: Callable[[str], None] | None = None, sys: Syscalls | None = None) -> int:
    """Run `proc` (an OCI process object) inside the running container; exit status or 0 if detached."""
    warn = warn or stderr_warn
    c = Container(root, cid)
    require(c.status(), "exec", cid)
    cfg = config.load(str(c.data["bundle"]), lambda m: None)
    linux: dict[str, object] = cfg.get("linux") or {}  # type: ignore[assignment]
    join = {}
    for ns in linux.get("namespaces") or []:  # type: ignore[attr-defined]
        name = NAMESPACES[ns["type"]][1]
        path = f"/proc/{c.pid}/ns/{name}"
        try:
            if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                join[ns["type"]] = path
        except FileNotFoundError:
            continue
    sysc = _sys(sys)
    smod = container.seccomp_module() if linux.get("seccomp") else None
    prepared = smod.prepare(linux.get("seccomp")) if smod is not None else None  # type: ignore[attr-defined]
    sock = None
    if proc.get("terminal"):
        if not console_socket:
            raise config.ConfigError("exec --tty needs --console-socket")
        from stackd.engine.runtime import console

        sock = console.connect(console_socket)
    helper = process.sealed_helper()
    chan = namespaces.Channel()
    if not detach:
        subreaper(sysc)
    try:
        process.preimport(proc, cfg)
        launch = process.Launch(sysc, cfg, proc, is_exec=True, helper_fd=helper, seccomp=prepared, console=sock,
                                keep_fds=preserve_fds)
        pid1 = container.spawn(sysc, chan, launch, join, None)
        cg = c.cgroup()
        pid = container.drive(chan, pid1, linux, cg, warn)
    finally:
        os.close(helper)
        chan.close()
        if sock is not None:
            sock.close()  # type: ignore[attr-defined]
    if pid_file:
        container._write_pid_file(pid_file, pid)
    if detach:
        return 0
    return wait_child(pid)[0]


def exec_spec(base: dict[str, object], args: list[str], *, env: list[str] = (), cwd: str | None = None,  # type: ignore[assignment]
              user: str | None = None, tty: bool = False, no_new_privs: bool | None = None) -> dict[str, object]:
    """An exec process object from the container's process and runc-style overrides."""
    proc = dict(base)
    proc.pop("rlimits", None)
    proc.pop("oomScoreAdj", None)
    proc["args"] = list(args)
    proc["env"] = [*(base.get("env") or []), *env]  # type: ignore[misc]
    proc["terminal"] = tty
    if cwd:
        proc["cwd"] = cwd
    if user:
        uid, _, gid = user.partition(":")
        proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if no_new_privs is not None:
        proc["noNewPrivileges"] = no_new_privs
    return proc
