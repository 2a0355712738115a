"""OCI linux.seccomp: compile with libseccomp in the parent, install the BPF in the child before exec.

`prepare()` runs before fork: it builds the filter with libseccomp (through ctypes, imported
lazily) and exports the BPF program as bytes. `Prepared.load()` runs in the child as the last
step before execve: one seccomp(2) call (prctl fallback), no libseccomp, nothing allocated.
It needs no_new_privs set, or CAP_SYS_ADMIN still in the effective set, as the kernel demands.
"""

from __future__ import annotations

import errno as _errno
import os
import sys

from stackd.errors import RuntimeSpecError

ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
SECCOMP_SET_MODE_FILTER = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
NR_SCMP_ERROR = -1
# Syscalls newer than some libseccomp builds know, by their number on x86_64 (kernel ≥ 6.8).
X86_64_FALLBACK = {
    "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453, "futex_wake": 454,
    "futex_wait": 455, "futex_requeue": 456, "statmount": 457, "listmount": 458,
    "lsm_get_self_attr": 459, "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462,
}  # fmt: skip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Warn = Callable[[str], None]


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"stackd-runtime: warning: {message}\n")


def default_profile(capabilities: list[str] | None = None) -> dict[str, Any]:
    """Docker's default seccomp profile as an OCI linux.seccomp section (see seccomp_default)."""
    from stackd.engine.runtime import seccomp_default

    return seccomp_default.default_profile(capabilities)


class Prepared:
    """A compiled filter: the BPF program and the seccomp(2) flags, ready to load in a child."""

    def __init__(self, program: bytes, flags: int = 0, nr_seccomp: int = 317, warnings: list[str] | None = None) -> None:
        from stackd.engine.runtime import libc as ctypes  # the hot path: not the full ctypes

        if not program or len(program) % 8:
            raise RuntimeSpecError("seccomp: the BPF program is empty or not made of 8-byte instructions")
        self.program = program
        self.flags = flags
        self.warnings = warnings or []

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        self._buf = ctypes.create_string_buffer(program, len(program))
        self._fprog = SockFprog(len(program) // 8, ctypes.addressof(self._buf))
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._prctl = libc.prctl
        self._prctl.restype = ctypes.c_int
        self._get_errno = ctypes.get_errno
        ptr = ctypes.c_void_p(ctypes.addressof(self._fprog))
        self._args = (ctypes.c_long(nr_seccomp), ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags), ptr)
        self._prctl_args = (ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ptr)

    def load(self) -> None:
        """Install the filter in this process (call it last, right before execve)."""
        if self._syscall(*self._args) == 0:
            return
        err = self._get_errno()
        if err == _errno.ENOSYS and self.flags == 0 and self._prctl(*self._prctl_args) == 0:
            return
        err = err if err != _errno.ENOSYS else self._get_errno()
        hint = ""
        if err == _errno.EACCES:
            hint = ": set process.noNewPrivileges, or load the filter while CAP_SYS_ADMIN is still effective"
        elif err == _errno.EINVAL:
            hint = ": the kernel rejected the program or one of its flags"
        raise RuntimeSpecError(f"seccomp: installing the filter failed ({_errno.errorcode.get(err, err)}){hint}")


def _lib() -> Any:
    import ctypes

    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        raise RuntimeSpecError(f"seccomp: libseccomp.so.2 is not installed ({e}); install libseccomp2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


def action_value(name: str, errno_ret: int | None, default_errno: int = _errno.EPERM) -> int:
    """The libseccomp action word for an OCI action name (with its errno for ERRNO/TRACE)."""
    if name == "SCMP_ACT_NOTIFY":
        raise RuntimeSpecError("seccomp: SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which stackd does not support")
    if name not in ACTIONS:
        raise RuntimeSpecError(f"seccomp: unknown action {name!r} (expected one of {', '.join(sorted(ACTIONS))})")
    value = ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        code = default_errno if errno_ret is None else errno_ret
        if not isinstance(code, int) or not 0 <= code <= 0xFFFF:
            raise RuntimeSpecError(f"seccomp: errnoRet must be 0-65535, got {code!r}")
        value |= code
    return value


def _flags(names: list[str]) -> int:
    out = 0
    for f in names or []:
        if f not in FLAGS:
            raise RuntimeSpecError(f"seccomp: unsupported flag {f!r} (supported: {', '.join(FLAGS)})")
        out |= FLAGS[f]
    return out


def _arch_name(oci: str) -> bytes:
    return oci.removeprefix("SCMP_ARCH_").lower().encode()


_MEMO: dict[str, tuple[bytes, int, int, list[str]]] = {}
_LIB_ID: list[str] = []


def prepare(seccomp: dict[str, Any] | None, *, warn: Warn | None = None, cache_dir: str | None = None) -> Prepared | None:
    """Compile OCI linux.seccomp into a BPF program (parent side, before fork); None when unset.

    Compiling Docker's profile costs ~10 ms in libseccomp, so results are memoised in-process and,
    with `cache_dir` (the runtime puts it under its --root), on disk: the file is found by a cheap
    checksum and used only if the full text it records (the section, the architecture and the
    libseccomp build) equals this one, and only if it and its directory are ours and not writable
    by others.
    """
    if not seccomp:
        return None
    from stackd.engine.runtime.config import dumps

    warn = warn or _stderr_warn
    text = f"{_lib_identity()}\0{dumps(seccomp)}"
    hit = _MEMO.get(text) or (_cache_read(cache_dir, text) if cache_dir else None)
    if hit is None:
        hit = _compile(seccomp)
        if cache_dir:
            _cache_write(cache_dir, text, hit)
    _MEMO[text] = hit
    program, flags, nr, warnings = hit
    for w in warnings:
        warn(w)
    return Prepared(program, flags, nr, list(warnings))


def _lib_identity() -> str:
    """The architecture and the libseccomp build (path and mtime) a compiled program depends on."""
    if not _LIB_ID:
        machine = os.uname().machine
        lib = ""
        for d in (f"/usr/lib/{machine}-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64", "/usr/local/lib"):
            if os.path.exists(f"{d}/libseccomp.so.2"):
                real = os.path.realpath(f"{d}/libseccomp.so.2")
                lib = f"{real}:{os.stat(real).st_mtime_ns}"
                break
        _LIB_ID.append(f"{machine}\0{lib}")
    return _LIB_ID[0]


def _cache_path(cache_dir: str, text: str) -> str:
    data = text.encode()
    return os.path.join(cache_dir, f"seccomp-{len(data):x}-{int.from_bytes(data, 'little') % ((1 << 61) - 1):x}.json")


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cache_read(cache_dir: str, text: str) -> tuple[bytes, int, int, list[str]] | None:
    from stackd.engine.runtime.config import loads

    try:
        fd = os.open(_cache_path(cache_dir, text), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not (_trusted(os.fstat(fd)) and _trusted(os.stat(cache_dir))):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        d = loads(b"".join(chunks).decode())
        if not isinstance(d, dict) or d.get("key") != text:
            return None
        program, flags, nr, warnings = bytes.fromhex(d["program"]), d["flags"], d["nr"], d["warnings"]
        if not (program and isinstance(flags, int) and isinstance(nr, int) and isinstance(warnings, list)):
            return None
        return program, flags, nr, [str(w) for w in warnings]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def _cache_write(cache_dir: str, text: str, hit: tuple[bytes, int, int, list[str]]) -> None:
    from stackd.engine.runtime.config import dumps

    program, flags, nr, warnings = hit
    path = _cache_path(cache_dir, text)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, dumps({"key": text, "program": program.hex(), "flags": flags, "nr": nr,
                                "warnings": warnings}).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _compile(seccomp: dict[str, Any]) -> tuple[bytes, int, int, list[str]]:
    """Run libseccomp: (program, flags, seccomp syscall number, warnings)."""
    import ctypes

    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)

    if seccomp.get("listenerPath") or seccomp.get("listenerMetadata"):
        raise RuntimeSpecError("seccomp: listenerPath (a seccomp notify agent) is not supported by stackd")
    default_name = seccomp.get("defaultAction") or "SCMP_ACT_ALLOW"
    default = action_value(default_name, seccomp.get("defaultErrnoRet"))
    flags = _flags(seccomp.get("flags") or [])
    lib = _lib()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeSpecError(f"seccomp: seccomp_init({default_name}) failed")

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    try:
        lib.seccomp_attr_set(ctx, 3, 0)  # SCMP_FLTATR_CTL_NNP off: the runtime decides about NNP
        for arch in seccomp.get("architectures") or []:
            token = lib.seccomp_arch_resolve_name(_arch_name(arch))
            if token == 0:
                raise RuntimeSpecError(f"seccomp: unknown architecture {arch!r}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -_errno.EEXIST:
                raise RuntimeSpecError(f"seccomp: adding architecture {arch} failed ({_errno.errorcode.get(-rc, rc)})")
        native = os.uname().machine
        max_nr = -1
        for i, entry in enumerate(seccomp.get("syscalls") or []):
            action = action_value(entry.get("action", ""), entry.get("errnoRet"))
            if action == default:
                continue  # libseccomp refuses rules equal to the default; they change nothing
            args = entry.get("args") or []
            cmps = []
            for a in args:
                op = OPS.get(a.get("op", ""))
                if op is None:
                    raise RuntimeSpecError(f"seccomp: syscalls[{i}]: unknown comparison {a.get('op')!r}")
                idx = a.get("index", 0)
                if not 0 <= idx <= 5:
                    raise RuntimeSpecError(f"seccomp: syscalls[{i}]: argument index must be 0-5, got {idx}")
                cmps.append(ArgCmp(idx, op, a.get("value", 0) & (2**64 - 1), a.get("valueTwo", 0) & (2**64 - 1)))
            # Comparisons on one argument can't be ANDed by libseccomp: like runc, one rule each (OR).
            same_index = len({c.arg for c in cmps}) != len(cmps)
            groups = [[c] for c in cmps] if same_index else [cmps]
            for name in entry.get("names") or ([entry["name"]] if entry.get("name") else []):
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == NR_SCMP_ERROR:
                    if native == "x86_64" and name in X86_64_FALLBACK:
                        nr = X86_64_FALLBACK[name]
                    else:
                        _warn(f"seccomp: unknown syscall {name!r} skipped (not known on this architecture or to libseccomp)")
                        continue
                if nr >= 0:
                    max_nr = max(max_nr, nr)
                for group in groups:
                    arr = (ArgCmp * max(len(group), 1))(*group)
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), ctypes.byref(arr))
                    if rc < 0:
                        if nr < 0:  # a pseudo-syscall of another architecture: cannot express it
                            _warn(f"seccomp: rule for {name!r} skipped ({_errno.errorcode.get(-rc, rc)})")
                            continue
                        raise RuntimeSpecError(f"seccomp: adding the rule for {name!r} failed ({_errno.errorcode.get(-rc, rc)})")
        fd = os.memfd_create("stackd-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise RuntimeSpecError(f"seccomp: seccomp_export_bpf failed ({_errno.errorcode.get(-rc, rc)})")
            size = os.lseek(fd, 0, os.SEEK_END)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        nr_seccomp = lib.seccomp_syscall_resolve_name(b"seccomp")
    finally:
        lib.seccomp_release(ctx)
    if default_name == "SCMP_ACT_ERRNO" and max_nr >= 0:
        program = enosys_stub(native, max_nr) + program
    return program, flags, nr_seccomp if nr_seccomp > 0 else 317, warnings


AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "riscv64": 0xC00000F3, "ppc64le": 0xC0000015, "s390x": 0x80000016}


def enosys_stub(machine: str, max_nr: int) -> bytes:
    """BPF run before the filter: native syscalls newer than any the profile names get ENOSYS.

    Like runc: an allowlist written before a syscall existed must not answer EPERM for it, or
    libc never falls back to the older call (fchmodat2 → fchmodat, clone3 → clone, …).
    """
    import struct

    arch = AUDIT_ARCH.get(machine)
    if arch is None:
        return b""

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    return b"".join([
        ins(0x20, 0, 0, 4),  # A = seccomp_data.arch
        ins(0x15, 0, 4, arch),  # not the native arch: run the filter
        ins(0x20, 0, 0, 0),  # A = seccomp_data.nr
        ins(0x35, 2, 0, 0x40000000),  # x32 numbers: run the filter
        ins(0x25, 0, 1, max_nr),  # nr > max: ENOSYS, else run the filter
        ins(0x06, 0, 0, ACTIONS["SCMP_ACT_ERRNO"] | _errno.ENOSYS),
    ])  # fmt: skip
