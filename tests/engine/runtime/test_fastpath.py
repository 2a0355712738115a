"""The runtime's start-up fast path: lean imports, the libc shim, the cgroup warm-up, the seccomp cache."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackd.engine.runtime import config, libc, seccomp

REPO = str(Path(__file__).resolve().parents[3])
PY = [sys.executable, "-S", "-E", "-c"]
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def fresh(code: str) -> str:
    """Run `code` in a new interpreter (no site, like the -SE launcher) and return its stdout."""
    out = subprocess.run([*PY, f"import sys; sys.path.insert(0, {REPO!r}); {code}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_hot_path_imports_nothing_heavy() -> None:
    heavy = {"re", "json", "typing", "hashlib", "dataclasses", "enum", "ctypes", "subprocess", "logging", "zlib"}
    loaded = fresh("from stackd.engine.runtime import api, cgroups, cgroups_v1, cgroups_v2, linux, process, rootfs, "
                   "seccomp, namespaces; "
                   f"print(','.join(sorted(set(sys.modules) & set({sorted(heavy)!r}))))")
    assert loaded == ""


def test_state_verbs_import_no_kernel_bindings() -> None:
    loaded = fresh("from stackd.engine.runtime import api; "
                   "print(','.join(sorted(m for m in sys.modules if m.endswith(('.linux', '.libc', '_ctypes', 'seccomp')))))")
    assert loaded == ""


def test_libc_shim_calls_libc_and_swaps_errno() -> None:
    c = libc.CDLL(None, use_errno=True)
    assert c.getpid() == os.getpid()
    c.close.argtypes = (libc.c_int,)
    assert c.close(-1) == -1 and libc.get_errno() == errno.EBADF
    assert libc.create_string_buffer(b"ab", 4).raw == b"ab\0\0"  # type: ignore[attr-defined]
    assert libc.create_string_buffer(3).raw == b"\0\0\0"  # type: ignore[attr-defined]

    class Pair(libc.Structure):
        _fields_ = (("a", libc.c_uint32), ("b", libc.c_uint64))

    p = Pair(1, 2**40)
    assert (p.a, p.b) == (1, 2**40) and libc.addressof(p) > 0


def test_cgroup_warmup_forks_a_helper_that_changes_nothing() -> None:
    out = fresh("from stackd.engine.runtime import cgroups_warm as w; before = open('/proc/self/cgroup').read(); "
                "w.start(); pid = w._pid; w.reap(block=True); "
                "print(pid > 0, w._pid, open('/proc/self/cgroup').read() == before)")
    expected = "True 0 True" if os.path.isdir("/sys/fs/cgroup") else "False 0 True"
    assert out == expected


def test_cgroup_warmup_is_skipped_in_a_threaded_process() -> None:
    out = fresh("import threading; e = threading.Event(); t = threading.Thread(target=e.wait); t.start(); "
                "from stackd.engine.runtime import cgroups_warm as w; w.start(); print(w._pid); e.set(); t.join()")
    assert out == "0"


def _section() -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]}


def test_seccomp_cache_is_used_only_for_the_same_text(tmp_path: Path) -> None:
    section = _section()
    seccomp._MEMO.clear()
    good = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert good is not None
    (path,) = tmp_path.iterdir()
    text = seccomp._lib_identity() + "\0" + config.dumps(section)
    assert str(path) == seccomp._cache_path(str(tmp_path), text)
    bogus = json.loads(path.read_text())
    bogus["program"] = (b"\x06\x00\x00\x00\x00\x00\xff\x7f").hex()  # a lone "allow everything"
    bogus["key"] = text + " "  # same file name would need a checksum collision: the full text decides
    path.write_text(json.dumps(bogus))
    seccomp._MEMO.clear()
    again = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert again is not None and again.program == good.program


def test_seccomp_cache_file_writable_by_others_is_ignored(tmp_path: Path) -> None:
    section = _section()
    seccomp._MEMO.clear()
    good = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert good is not None
    (path,) = tmp_path.iterdir()
    bogus = json.loads(path.read_text())
    bogus["program"] = (b"\x06\x00\x00\x00\x00\x00\xff\x7f").hex()
    path.write_text(json.dumps(bogus))
    path.chmod(0o666)
    seccomp._MEMO.clear()
    again = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert again is not None and again.program == good.program
    path.write_text(json.dumps(bogus))  # (prepare rewrote the file) now trusted: the cached program is used
    path.chmod(0o600)
    seccomp._MEMO.clear()
    cached = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert cached is not None and cached.program == bytes.fromhex(bogus["program"])


@pytest.mark.parametrize("obj", [{"a": [1, 2, {"x": None, "y": []}], "b": {}, "c": "é\"", "d": True, "e": 1.5},
                                 [], {}, [1], {"annotations": {"k": "v"}}])
def test_indented_json_matches_the_json_module(obj: object) -> None:
    assert config.dumps_indent(obj) == json.dumps(obj, indent=2)
