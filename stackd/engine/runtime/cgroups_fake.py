"""A recording in-memory cgroup filesystem (v1, hybrid or v2 layout) that behaves like the kernel's."""

from __future__ import annotations

import errno
import posixpath

UNLIMITED = "9223372036854771712"
V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0", "cpu.idle": "0"},
    "cpuacct": {"cpuacct.usage": "0", "cpuacct.stat": "user 0\nsystem 0\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": UNLIMITED, "memory.memsw.limit_in_bytes": UNLIMITED,
               "memory.soft_limit_in_bytes": UNLIMITED, "memory.swappiness": "60",
               "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0",
               "memory.kmem.tcp.limit_in_bytes": UNLIMITED,
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.throttle.read_bps_device": ""},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": UNLIMITED},
}
V2_FILES: dict[str, dict[str, str]] = {
    "": {"cgroup.freeze": "0", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": ""},
    "memory": {"memory.max": "max", "memory.high": "max", "memory.low": "0", "memory.swap.max": "max", "memory.current": "0",
               "memory.peak": "0", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.idle": "0",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.weight": "default 100", "io.max": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "hugetlb": {"hugetlb.2MB.max": "max"},
}  # fmt: skip
LAYOUTS = {
    "v1": (["cpu,cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio", "hugetlb"], None),
    "hybrid": (["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio"], "hugetlb"),
    "v2": ([], "cpuset cpu io memory hugetlb pids"),
}


class FakeCgroupFS:
    """Directories, control files and pid membership per hierarchy; every write is recorded."""

    def __init__(self, layout: str = "hybrid", root: str = "/sys/fs/cgroup", own: str = "/") -> None:
        self.root = root
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.kind: dict[str, str] = {}  # mountpoint → "v1:<ctrls>" or "v2"
        self.writes: list[tuple[str, str]] = []
        self.killed: set[int] = set()
        v1, v2 = LAYOUTS[layout]
        lines, cg_lines = [], []
        n = 20
        for i, ctrls in enumerate(v1, 1):
            mnt = f"{root}/{ctrls}"
            self._mount(mnt, "v1:" + ctrls)
            lines.append(f"{n + i} 1 0:{n + i} / {mnt} rw - cgroup cgroup rw,{ctrls}")
            cg_lines.append(f"{i}:{ctrls}:{own}")
        if v2 is not None:
            mnt = root if layout == "v2" else f"{root}/unified"
            self._mount(mnt, "v2")
            self.files[f"{mnt}/cgroup.controllers"] = v2
            self.files[f"{mnt}/cgroup.subtree_control"] = ""
            lines.append(f"99 1 0:99 / {mnt} rw - cgroup2 cgroup2 rw")
            cg_lines.append(f"0::{own}")
        self.files["/proc/self/mountinfo"] = "\n".join(lines) + "\n"
        self.files["/proc/self/cgroup"] = "\n".join(cg_lines) + "\n"
        for cpuset in [m for m, k in self.kind.items() if "cpuset" in k]:
            self.files[f"{cpuset}/cpuset.cpus"] = "0-1"
            self.files[f"{cpuset}/cpuset.mems"] = "0"

    def _mount(self, mnt: str, kind: str) -> None:
        self.kind[mnt] = kind
        self.dirs.add(mnt)
        self.files[f"{mnt}/cgroup.procs"] = ""

    def _hier(self, path: str) -> str:
        for mnt in sorted(self.kind, key=len, reverse=True):
            if path == mnt or path.startswith(mnt + "/"):
                return mnt
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    # -- CgroupFS ------------------------------------------------------------------------------
    def read(self, path: str) -> str:
        if path in self.dirs:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return self.files[path]

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def subdirs(self, path: str) -> list[str]:
        if path not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return sorted(d for d in self.dirs if posixpath.dirname(d) == path and d != path)

    def mkdir(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if path in self.dirs:
            raise FileExistsError(errno.EEXIST, "File exists", path)
        if parent not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        mnt = self._hier(parent)
        self.dirs.add(path)
        self.files[f"{path}/cgroup.procs"] = ""
        kind = self.kind[mnt]
        if kind == "v2":
            enabled = self.files.get(f"{parent}/cgroup.subtree_control", "").split()
            self.files[f"{path}/cgroup.controllers"] = " ".join(enabled)
            self.files[f"{path}/cgroup.subtree_control"] = ""
            for ctrl in ["", *enabled]:
                for f, v in V2_FILES.get(ctrl, {}).items():
                    self.files[f"{path}/{f}"] = v
        else:
            for ctrl in kind[3:].split(","):
                for f, v in V1_FILES.get(ctrl, {}).items():
                    self.files[f"{path}/{f}"] = v

    def rmdir(self, path: str) -> None:
        if path not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if path in self.kind:
            raise PermissionError(errno.EBUSY, "Device or resource busy", path)
        if self.files.get(f"{path}/cgroup.procs") or self.subdirs(path):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        self.dirs.discard(path)
        for f in [f for f in self.files if posixpath.dirname(f) == path]:
            del self.files[f]

    def write(self, path: str, data: str) -> None:
        if path not in self.files or path.startswith("/proc/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        d, name = posixpath.split(path)
        self.writes.append((path, data))
        data = data.strip()
        if name == "cgroup.procs":
            mnt = self._hier(d)
            for other in self.dirs:
                if self._hier(other) == mnt:
                    procs = self.files[f"{other}/cgroup.procs"].split()
                    self.files[f"{other}/cgroup.procs"] = "\n".join(p for p in procs if p != data)
            self.files[path] = "\n".join([*self.files[path].split(), data])
        elif name == "cgroup.subtree_control":
            ctrl = data.lstrip("+-")
            if ctrl not in self.files[f"{d}/cgroup.controllers"].split():
                raise OSError(errno.ENOENT, "No such file or directory", path)
            on = set(self.files[path].split())
            on = on | {ctrl} if data.startswith("+") else on - {ctrl}
            self.files[path] = " ".join(sorted(on))
        elif name == "freezer.state":
            if data not in ("FROZEN", "THAWED"):
                raise OSError(errno.EINVAL, "Invalid argument", path)
            self.files[path] = data + "\n"
        elif name == "cgroup.freeze":
            self.files[path] = data
            self.files[f"{d}/cgroup.events"] = f"populated 0\nfrozen {1 if data == '1' else 0}\n"
        elif name == "cgroup.kill":
            self.killed.update(int(p) for p in self.files[f"{d}/cgroup.procs"].split())
            self.files[f"{d}/cgroup.procs"] = ""
        elif name in ("devices.allow", "devices.deny"):
            listing = self.files[f"{d}/devices.list"]
            if name == "devices.deny" and data == "a":
                listing = ""
            elif name == "devices.allow":
                listing += data + "\n"
            self.files[f"{d}/devices.list"] = listing
        elif name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            value = UNLIMITED if data == "-1" else data
            mem = int(value if name == "memory.limit_in_bytes" else self.files[f"{d}/memory.limit_in_bytes"])
            memsw = int(value if name != "memory.limit_in_bytes" else self.files[f"{d}/memory.memsw.limit_in_bytes"])
            if memsw < mem:
                raise OSError(errno.EINVAL, "Invalid argument", path)
            self.files[path] = value
        else:
            self.files[path] = data

    # -- test helpers --------------------------------------------------------------------------
    def exit(self, pid: int) -> None:
        """The process ended: it leaves every cgroup."""
        for f, v in self.files.items():
            if f.endswith("/cgroup.procs"):
                self.files[f] = "\n".join(p for p in v.split() if p != str(pid))

    def value(self, path: str) -> str:
        return self.files[path].strip()
