"""OCI linux.resources on the cgroup v2 unified hierarchy: the files, stats and OOM events."""

from __future__ import annotations

from stackd.engine.runtime.cgroups_v1 import _num
from stackd.errors import RuntimeSpecError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from stackd.engine.runtime.cgroups import Cgroup

DEVICES_V2 = (
    "cgroup: linux.resources.devices: on cgroup v2 device rules need an eBPF program "
    "(BPF_CGROUP_DEVICE) attached to the container's cgroup; stackd does not attach one, so these "
    "rules are NOT enforced: device access is limited only by the nodes created in the container's "
    "/dev and its capabilities (mknod needs CAP_MKNOD)"
)


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2-262144) → cpu.weight (1-10000), the conversion runc and crun use."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight (10-1000) → io.weight (1-10000)."""
    return 1 + (weight - 10) * 9999 // 990


def _limit(value: int) -> str:
    return "max" if value < 0 else str(value)


def apply(cg: Cgroup, d: str, res: dict[str, Any]) -> None:
    """Write every resource the OCI section sets into `d`; unsupported ones warn, bad values raise."""
    mem = res.get("memory") or {}
    if mem:
        _memory(cg, d, mem)
    cpu = res.get("cpu") or {}
    if cpu:
        _cpu(cg, d, cpu)
    if (pids := res.get("pids")) and pids.get("limit") is not None:
        limit = _num(pids["limit"], "pids.limit")
        cg.write(f"{d}/pids.max", "max" if limit <= 0 else limit)
    if bio := res.get("blockIO"):
        _io(cg, d, bio)
    if res.get("devices"):
        cg.warn(DEVICES_V2)
    for h in res.get("hugepageLimits") or []:
        cg.write(f"{d}/hugetlb.{h['pageSize']}.max", _num(h.get("limit"), "hugepageLimits.limit"))
    net = res.get("network") or {}
    if net.get("classID") is not None or net.get("priorities"):
        cg.warn("cgroup: linux.resources.network ignored: cgroup v2 has no net_cls/net_prio controllers")
    if res.get("rdma"):
        cg.warn("cgroup: linux.resources.rdma is not supported by stackd; ignored")
    for key, value in (res.get("unified") or {}).items():
        if "/" in key or key.startswith(".") or key in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            raise RuntimeSpecError(f"cgroup: linux.resources.unified[{key!r}]: not a settable cgroup file")
        cg.write(f"{d}/{key}", value)


def _memory(cg: Cgroup, d: str, mem: dict[str, Any]) -> None:
    limit, swap = mem.get("limit"), mem.get("swap")
    if limit is not None:
        _num(limit, "memory.limit")
    if swap is not None:
        _num(swap, "memory.swap")
    if swap is not None and swap >= 0:
        if limit is None or limit < 0:
            raise RuntimeSpecError("cgroup: linux.resources.memory.swap needs memory.limit on cgroup v2")
        if swap < limit:
            raise RuntimeSpecError(f"cgroup: linux.resources.memory.swap ({swap}) must be >= memory.limit ({limit}): swap counts memory plus swap")
    if swap is not None:
        path = f"{d}/memory.swap.max"
        if cg.has(path):
            cg.write(path, "max" if swap < 0 else swap - (limit or 0))
        else:
            cg.warn("cgroup: linux.resources.memory.swap ignored: swap accounting is off in this kernel")
    if limit is not None:
        cg.write(f"{d}/memory.max", _limit(limit) if limit != 0 else "max")
    if (res := mem.get("reservation")) is not None:
        cg.write(f"{d}/memory.low", _limit(_num(res, "memory.reservation")))
    if mem.get("kernel") is not None or mem.get("kernelTCP") is not None:
        cg.warn("cgroup: linux.resources.memory.kernel/kernelTCP are not supported on cgroup v2; ignored")
    if mem.get("swappiness") is not None:
        cg.warn("cgroup: linux.resources.memory.swappiness has no cgroup v2 equivalent; ignored")
    if mem.get("disableOOMKiller"):
        cg.warn("cgroup: linux.resources.memory.disableOOMKiller is not supported on cgroup v2; ignored")


def _cpu(cg: Cgroup, d: str, cpu: dict[str, Any]) -> None:
    if (shares := cpu.get("shares")) is not None:
        weight = shares_to_weight(_num(shares, "cpu.shares"))
        if weight:
            cg.write(f"{d}/cpu.weight", min(max(weight, 1), 10000))
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota is not None or period is not None:
        q = "max" if quota is None or _num(quota, "cpu.quota") <= 0 else str(quota)
        p = _num(period, "cpu.period") if period else 100000
        cg.write(f"{d}/cpu.max", f"{q} {p}")
    if (burst := cpu.get("burst")) is not None:
        cg.write(f"{d}/cpu.max.burst", _num(burst, "cpu.burst"))
    if cpu.get("idle") is not None:
        cg.write(f"{d}/cpu.idle", _num(cpu["idle"], "cpu.idle"))
    if cpu.get("realtimeRuntime") is not None or cpu.get("realtimePeriod") is not None:
        cg.warn("cgroup: linux.resources.cpu.realtimeRuntime/realtimePeriod are not supported on cgroup v2; ignored")
    for key in ("cpus", "mems"):
        if cpu.get(key):
            cg.write(f"{d}/cpuset.{key}", cpu[key])


def _io(cg: Cgroup, d: str, bio: dict[str, Any]) -> None:
    if (w := bio.get("weight")) is not None:
        w = _num(w, "blockIO.weight")
        if cg.has(f"{d}/io.bfq.weight"):
            cg.write(f"{d}/io.bfq.weight", w)
        elif cg.has(f"{d}/io.weight"):
            cg.write(f"{d}/io.weight", f"default {blkio_to_io_weight(w)}")
        else:
            cg.warn("cgroup: linux.resources.blockIO.weight ignored: no io.weight on this kernel")
    for dev in bio.get("weightDevice") or []:
        if dev.get("weight") is not None:
            cg.write(f"{d}/io.weight", f"{dev['major']}:{dev['minor']} {blkio_to_io_weight(dev['weight'])}")
    for key, word in (
        ("throttleReadBpsDevice", "rbps"),
        ("throttleWriteBpsDevice", "wbps"),
        ("throttleReadIOPSDevice", "riops"),
        ("throttleWriteIOPSDevice", "wiops"),
    ):
        for dev in bio.get(key) or []:
            cg.write(f"{d}/io.max", f"{dev['major']}:{dev['minor']} {word}={dev['rate']}")


def _keyed(cg: Cgroup, path: str) -> dict[str, int]:
    try:
        text = cg.fs.read(path)
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def oom_killed(cg: Cgroup, d: str) -> bool:
    return _keyed(cg, f"{d}/memory.events").get("oom_kill", 0) > 0


def _one(cg: Cgroup, path: str) -> int | None:
    try:
        text = cg.fs.read(path).strip()
    except OSError:
        return None
    return None if text == "max" or not text else int(text)


def stats(cg: Cgroup, d: str) -> dict[str, Any]:
    cpu = _keyed(cg, f"{d}/cpu.stat")
    return {
        "memory": {
            "usage": _one(cg, f"{d}/memory.current"),
            "max_usage": _one(cg, f"{d}/memory.peak"),
            "limit": _one(cg, f"{d}/memory.max"),
        },
        "cpu": {k + "_ns": cpu[k + "_usec"] * 1000 for k in ("usage", "user", "system") if k + "_usec" in cpu},
        "pids": {"current": _one(cg, f"{d}/pids.current"), "limit": _one(cg, f"{d}/pids.max")},
    }
