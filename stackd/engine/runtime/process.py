"""The container process: set it up (user, caps, rlimits, fds, seccomp) and exec the user program.

The last exec goes through a tiny static helper held in a sealed memfd: the process that runs
container code never has the host's Python as /proc/self/exe (CVE-2019-5736 class), even when
the program is a `#!/proc/self/exe` script; and the process is non-dumpable until that exec.
"""

from __future__ import annotations

import os

from stackd.engine.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
CAP_NUM = {"CAP_" + n: i for i, n in enumerate(CAPS)}
RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
           "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
           "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
           "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
F_ADD_SEALS = 1033
SEALS = 1 | 2 | 4 | 8  # SEAL, SHRINK, GROW, WRITE

# x86_64: unless argv[0] starts with MARKER (so a `#!/proc/self/exe` script cannot loop through it),
# exit_group(127); else execve(argv[1], &argv[2], envp), and exit_group(127) if that fails.
MARKER = b"stackd-x"
_CODE = (bytes.fromhex("488b4c2408" "48b8") + MARKER + bytes.fromhex("483901" "751a")
         + bytes.fromhex("488b7c2410" "488d742418" "488b0424" "488d54c410" "b83b000000" "0f05")
         + bytes.fromhex("bf7f000000" "b8e7000000" "0f05"))


def _u(n: int, size: int) -> bytes:
    return n.to_bytes(size, "little")


def helper_elf() -> bytes:
    """A minimal static ELF that execs argv[1] with argv[2:] (about 150 bytes)."""
    base, hdr = 0x400000, 64 + 56
    total = hdr + len(_CODE)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    eh = (ident + _u(2, 2) + _u(0x3E, 2) + _u(1, 4) + _u(base + hdr, 8) + _u(64, 8) + _u(0, 8) + _u(0, 4)
          + _u(64, 2) + _u(56, 2) + _u(1, 2) + _u(0, 2) + _u(0, 2) + _u(0, 2))
    ph = _u(1, 4) + _u(5, 4) + _u(0, 8) + _u(base, 8) + _u(base, 8) + _u(total, 8) + _u(total, 8) + _u(0x1000, 8)
    return eh + ph + _CODE


def sealed_helper() -> int:
    """A sealed, close-on-exec memfd holding `helper_elf()`; -1 on other architectures."""
    if os.uname().machine != "x86_64":
        return -1
    import fcntl

    fd = os.memfd_create("stackd-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, helper_elf())
    fcntl.fcntl(fd, F_ADD_SEALS, SEALS)
    return fd


def caps_mask(names: list[str] | None, warn: Callable[[str], None]) -> int:
    mask = 0
    last = _last_cap()
    for n in names or []:
        c = CAP_NUM.get(n)
        if c is None or c > last:
            warn(f"capability {n} is unknown to this kernel; ignored")
            continue
        mask |= 1 << c
    return mask


_LAST_CAP: list[int] = []


def _last_cap() -> int:
    """The kernel's highest capability number (read once; `preimport` reads it before fork)."""
    if not _LAST_CAP:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _LAST_CAP.append(int(f.read()))
        except OSError:
            _LAST_CAP.append(len(CAPS) - 1)
    return _LAST_CAP[0]


def find_exe(arg0: str, env: list[str], cwd: str) -> str:
    """Resolve args[0] inside the container like runc (PATH from the process env)."""
    if "/" in arg0:
        path = os.path.join(cwd, arg0)
        if not os.path.exists(path):
            raise OSError(2, f'exec: "{arg0}": no such file or directory', arg0)
        return arg0
    search = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for d in search.split(":"):
        p = os.path.join(d or ".", arg0)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise OSError(2, f'exec: "{arg0}": executable file not found in $PATH', arg0)


def set_rlimits(rlimits: list[dict[str, object]], warn: Callable[[str], None]) -> None:
    """Apply rlimits; above the host's hard limit without CAP_SYS_RESOURCE, clamp with a warning."""
    import resource

    for rl in rlimits:
        name = str(rl["type"])
        res = RLIMITS.get(name)
        if res is None:
            raise OSError(22, f"unknown rlimit {name}")
        soft, hard = int(rl["soft"]), int(rl["hard"])  # type: ignore[call-overload]
        soft = resource.RLIM_INFINITY if soft >= 2**64 - 1 else soft
        hard = resource.RLIM_INFINITY if hard >= 2**64 - 1 else hard
        try:
            resource.setrlimit(res, (soft, hard))
        except (PermissionError, ValueError):
            cur = resource.getrlimit(res)[1]
            if cur == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and hard <= cur):
                raise
            warn(f"{name} {soft}/{hard} is above the host's hard limit {cur} (no CAP_SYS_RESOURCE): clamped")
            resource.setrlimit(res, (min(soft, cur) if soft != resource.RLIM_INFINITY else cur, cur))


def limits(proc: dict[str, object], warn: Callable[[str], None], step: Callable[[str], None]) -> None:
    """rlimits and oomScoreAdj (while the runtime still listens for warnings)."""
    if proc.get("rlimits"):
        step("rlimits")
        set_rlimits(proc["rlimits"], warn)  # type: ignore[arg-type]
    if proc.get("oomScoreAdj") is not None:
        step("oomScoreAdj")
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(proc["oomScoreAdj"]))
        except PermissionError:
            warn("oomScoreAdj below the current value needs CAP_SYS_RESOURCE: not applied")


def finalize(sys: Syscalls, proc: dict[str, object], *, seccomp: object, helper_fd: int, keep_fds: int,
             warn: Callable[[str], None], step: Callable[[str], None], exe: str) -> None:
    """Drop to the process's identity and exec it; only returns by raising."""
    env = [str(e) for e in proc.get("env") or []]  # type: ignore[attr-defined]
    args = [str(a) for a in proc["args"]]  # type: ignore[attr-defined]
    user: dict[str, object] = proc.get("user") or {}  # type: ignore[assignment]
    caps: dict[str, list[str]] | None = proc.get("capabilities")  # type: ignore[assignment]
    nnp = bool(proc.get("noNewPrivileges"))
    step("close file descriptors")
    for fd in range(3, 3 + keep_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    sys.close_range(3 + keep_fds, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
    if caps is not None:
        step("bounding capabilities")
        bounding = caps_mask(caps.get("bounding"), warn)
        for c in range(_last_cap() + 1):
            if not bounding >> c & 1:
                sys.prctl(sc.PR_CAPBSET_DROP, c)
    if seccomp is not None and not nnp:
        step("seccomp")
        seccomp.load()  # type: ignore[attr-defined]
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))  # type: ignore[call-overload]
    step(f"user {uid}:{gid}")
    sys.prctl(sc.PR_SET_KEEPCAPS, 1)
    groups = [int(g) for g in user.get("additionalGids") or []]  # type: ignore[attr-defined]
    try:
        os.setgroups(groups)
    except PermissionError:
        if groups:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sys.prctl(sc.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        step("capabilities")
        eff, prm = caps_mask(caps.get("effective"), warn), caps_mask(caps.get("permitted"), warn)
        inh = caps_mask(caps.get("inheritable"), warn)
        sys.capset(eff & prm, prm, inh)
        sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
        amb = caps_mask(caps.get("ambient"), warn)
        for c in range(_last_cap() + 1):
            if amb >> c & 1:
                try:  # needs the capability in permitted and inheritable; runc only warns
                    sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, c)
                except OSError:
                    pass
    if "umask" in user:
        os.umask(int(user["umask"]))  # type: ignore[call-overload]
    if nnp:
        step("noNewPrivileges")
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    step("chdir")
    os.chdir(str(proc.get("cwd") or "/"))
    if seccomp is not None and nnp:
        step("seccomp")
        seccomp.load()  # type: ignore[attr-defined]
    step(f"exec {exe}")
    envd = dict(e.partition("=")[::2] for e in env)
    if helper_fd >= 0:
        os.execve(helper_fd, [MARKER.decode() + "ec", exe, *args], envd)
    os.execve(exe, args, envd)


def preimport(proc: dict[str, object], cfg: dict[str, object]) -> None:
    """Import now what later steps need: after pivot_root (or in a user namespace, or after joining a
    mount namespace) the host's stdlib is out of reach. The container process calls it first thing;
    the runtime calls it before fork when the process could not (user namespace, exec)."""
    from stackd.engine.runtime import rootfs  # noqa: F401
    if proc.get("capabilities"):
        _last_cap()
    if proc.get("rlimits"):
        import resource  # noqa: F401
    if proc.get("terminal"):
        import fcntl  # noqa: F401
        import socket  # noqa: F401

        from stackd.engine.runtime import console  # noqa: F401
    if cfg.get("hooks"):
        import select  # noqa: F401

        from stackd.engine.runtime import hooks  # noqa: F401


def _has_hooks(cfg: dict[str, object], *kinds: str) -> bool:
    """hooks.has_hooks, without importing the module when the config has none."""
    found: dict[str, object] = cfg.get("hooks") or {}  # type: ignore[assignment]
    return any(found.get(k) for k in kinds)


class Launch:
    """What the container process needs, prepared by the parent before fork."""

    def __init__(self, sys: Syscalls, cfg: dict[str, object], proc: dict[str, object], *, bundle: str = "",
                 rootfs: str = "", new: set[str] | None = None, is_exec: bool = False, fifo_fd: int = -1,
                 helper_fd: int = -1, seccomp: object = None, console: object = None, keep_fds: int = 0,
                 no_pivot: bool = False, cgroup_paths: dict[str, str] | None = None,
                 stdio: tuple[int, int, int] | None = None) -> None:
        self.sys, self.cfg, self.proc, self.bundle, self.rootfs = sys, cfg, proc, bundle, rootfs
        self.new = new or set()
        self.is_exec, self.fifo_fd, self.helper_fd, self.seccomp = is_exec, fifo_fd, helper_fd, seccomp
        self.console, self.keep_fds, self.no_pivot = console, keep_fds, no_pivot
        self.cgroup_paths, self.stdio = cgroup_paths, stdio
        self.close_in_child: list[int] = []  # e.g. the state lock: flock follows the open file


def container_main(ctx: Launch, chan: object) -> None:
    """The container's process after fork: set up, report ready, wait for start, exec. Never returns."""
    from stackd.engine.runtime.namespaces import Channel, ChildError

    assert isinstance(chan, Channel)
    sys, cfg, proc = ctx.sys, ctx.cfg, ctx.proc
    where = ["start"]
    connected = [True]

    def step(s: str) -> None:
        where[0] = s

    def warn(m: str) -> None:
        if connected[0]:
            chan.send("warn", m)

    joined = [False]

    def join_cgroup() -> None:
        """Wait until the runtime has moved us into the container's cgroup; then the cgroup namespace."""
        if joined[0]:
            return
        joined[0] = True
        step("join cgroup")
        chan.expect("go")
        if "cgroup" in ctx.new:
            step("unshare cgroup namespace")
            sys.unshare(sc.CLONE_NEWCGROUP)

    try:
        preimport(proc, cfg)
        from stackd.engine.runtime import rootfs

        if ctx.stdio:
            for i, fd in enumerate(ctx.stdio):
                if fd != i:
                    os.dup2(fd, i)
        if ctx.is_exec:
            join_cgroup()
            if proc.get("terminal"):
                os.setsid()
        else:  # the mounts up to the first cgroup one overlap the runtime's cgroup migration
            os.setsid()
            if cfg.get("hostname") and "uts" in ctx.new:
                step("sethostname")
                sys.sethostname(str(cfg["hostname"]))
            if cfg.get("domainname") and "uts" in ctx.new:
                step("setdomainname")
                sys.setdomainname(str(cfg["domainname"]))
            rootfs.setup(sys, cfg, ctx.bundle, ctx.rootfs, cgroup_paths=ctx.cgroup_paths,
                         new_cgroupns="cgroup" in ctx.new, in_userns="user" in ctx.new, step=step,
                         before_cgroup=join_cgroup)
            join_cgroup()
            if _has_hooks(cfg, "prestart", "createRuntime", "createContainer"):
                from stackd.engine.runtime import hooks

                step("createRuntime hooks")
                chan.send("hooks")
                state_json = str(chan.expect("go"))
                step("createContainer hooks")
                hooks.run_hooks(cfg, "createContainer", state_json)
            step("pivot_root")
            rootfs.pivot(sys, ctx.rootfs, ctx.no_pivot)
            rootfs.finish(sys, cfg, step)
        if proc.get("terminal"):
            step("console")
            from stackd.engine.runtime import console

            master, name = console.open_pty(proc.get("consoleSize"))  # type: ignore[arg-type]
            console.send_fd(ctx.console, master, name)
            os.close(master)
            console.attach_slave(name)
        limits(proc, warn, step)
        step("find executable")
        exe = find_exe(str(proc["args"][0]), list(proc.get("env") or []), str(proc.get("cwd") or "/"))  # type: ignore[index, call-overload]
        chan.send("ready")
        connected[0] = False
        if not ctx.is_exec:
            step("exec fifo")
            fd = os.open(f"/proc/self/fd/{ctx.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
            os.write(fd, b"0")
            os.close(fd)
            os.close(ctx.fifo_fd)
            if _has_hooks(cfg, "startContainer"):
                from stackd.engine.runtime import hooks

                step("startContainer hooks")
                hooks.run_hooks(cfg, "startContainer", "{}")
        finalize(sys, proc, seccomp=ctx.seccomp, helper_fd=ctx.helper_fd, keep_fds=ctx.keep_fds, warn=warn,
                 step=step, exe=exe)
    except BaseException as e:  # report and die: nothing may run on after a failed setup
        err = getattr(e, "errno", 0) or 0
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        if isinstance(e, ChildError):
            where[0], msg, err = e.step, e.message, e.errno
        try:
            if not connected[0]:
                raise OSError
            chan.send("error", {"step": where[0], "message": msg, "errno": err})
        except OSError:
            os.write(2, f"stackd-runtime: container process: {where[0]}: {msg}\n".encode())
        os._exit(127)
