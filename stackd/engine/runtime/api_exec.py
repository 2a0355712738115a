"""`exec`: run another process in a running container (the runtime's library half of the verb)."""

from __future__ import annotations

import os

from stackd.engine.runtime import cgroups_warm, config, container
from stackd.engine.runtime.api import SECCOMP_CACHE, _sys, stderr_warn, subreaper, wait_child
from stackd.engine.runtime.container import Container, require

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls


def exec_process(root: str, cid: str, proc: dict[str, object], *, detach: bool = False,
                 pid_file: str | None = None, console_socket: str | None = None, preserve_fds: int = 0,
                 warn: Callable[[str], None] | None = None, sys: Syscalls | None = None) -> int:
    """Run `proc` (an OCI process object) inside the running container; exit status or 0 if detached."""
    from stackd.engine.runtime import namespaces, process
    from stackd.engine.runtime.syscalls import NAMESPACES

    warn = warn or stderr_warn
    cgroups_warm.start()
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
    prepared = smod.prepare(linux.get("seccomp"), warn=warn,  # type: ignore[attr-defined]
                            cache_dir=os.path.join(root, SECCOMP_CACHE)) if smod is not None else None
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
        pid1, pid = container.spawn(sysc, chan, launch, join, None)
        cg = c.cgroup()
        pid = container.drive(chan, pid1, linux, cg, warn, pid=pid)
    finally:
        os.close(helper)
        chan.close()
        cgroups_warm.reap(block=False)
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
