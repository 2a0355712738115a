"""OCI linux.resources on cgroup v1 (and hybrid) hosts: the per-controller files, stats, OOM events."""

from __future__ import annotations

import errno as _errno

from stackd.errors import RuntimeSpecError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from stackd.engine.runtime.cgroups import Cgroup

UNLIMITED = 1 << 62  # v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712)


def _num(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeSpecError(f"cgroup: linux.resources.{what}: expected an integer, got {value!r}")
    return value


def _ctrl(cg: Cgroup, ctrl: str, what: str) -> str | None:
    d = cg.v1.get(ctrl)
    if d is None:
        cg.warn(f"cgroup: linux.resources.{what} ignored: the v1 {ctrl} controller is not mounted on this host")
    return d


def apply(cg: Cgroup, res: dict[str, Any]) -> None:
    """Write every resource the OCI section sets; unsupported ones warn, bad values raise."""
    _memory(cg, res.get("memory") or {})
    _cpu(cg, res.get("cpu") or {})
    if (pids := res.get("pids")) and pids.get("limit") is not None and (d := _ctrl(cg, "pids", "pids")):
        limit = _num(pids["limit"], "pids.limit")
        cg.write(f"{d}/pids.max", "max" if limit <= 0 else limit)
    _blkio(cg, res.get("blockIO") or {})
    if (devices := res.get("devices")) is not None and (d := _ctrl(cg, "devices", "devices")):
        write_devices(cg, d, devices)
    _hugetlb(cg, res.get("hugepageLimits") or [])
    _network(cg, res.get("network") or {})
    if res.get("unified"):
        _unified_on_hybrid(cg, res["unified"])
    if res.get("rdma"):
        cg.warn("cgroup: linux.resources.rdma is not supported by stackd; ignored")


def _memory(cg: Cgroup, mem: dict[str, Any]) -> None:
    if not mem:
        return
    d = _ctrl(cg, "memory", "memory")
    if d is None:
        return
    limit, swap = mem.get("limit"), mem.get("swap")
    if limit is not None:
        _num(limit, "memory.limit")
    if swap is not None:
        _num(swap, "memory.swap")
        if limit is not None and limit > 0 and swap > 0 and swap < limit:
            raise RuntimeSpecError(f"cgroup: linux.resources.memory.swap ({swap}) must be >= memory.limit ({limit}): swap counts memory plus swap")
    memsw = f"{d}/memory.memsw.limit_in_bytes"
    if swap is not None and not cg.has(memsw):
        cg.warn("cgroup: linux.resources.memory.swap ignored: swap accounting is off in this kernel")
        swap = None
    if limit is not None and swap is not None:
        # memsw must stay >= limit at every step: order the two writes accordingly.
        try:
            cg.write(f"{d}/memory.limit_in_bytes", limit)
            cg.write(memsw, swap)
        except RuntimeSpecError:
            cg.write(memsw, swap)
            cg.write(f"{d}/memory.limit_in_bytes", limit)
    elif limit is not None:
        if limit > 0 and cg.has(memsw):
            cur = int(cg.read(memsw).strip() or 0)
            if cur < limit:  # raising the limit above the current memsw: keep swap unlimited
                cg.write(memsw, -1)
        cg.write(f"{d}/memory.limit_in_bytes", limit)
    elif swap is not None:
        cg.write(memsw, swap)
    if (res := mem.get("reservation")) is not None:
        cg.write(f"{d}/memory.soft_limit_in_bytes", _num(res, "memory.reservation"))
    if mem.get("kernel") is not None:
        cg.warn("cgroup: linux.resources.memory.kernel is deprecated and ignored (kernel memory is always accounted)")
    if (tcp := mem.get("kernelTCP")) is not None:
        if cg.has(f"{d}/memory.kmem.tcp.limit_in_bytes"):
            cg.write(f"{d}/memory.kmem.tcp.limit_in_bytes", _num(tcp, "memory.kernelTCP"))
        else:
            cg.warn("cgroup: linux.resources.memory.kernelTCP ignored: not supported by this kernel")
    if (sw := mem.get("swappiness")) is not None:
        sw = _num(sw, "memory.swappiness")
        if not 0 <= sw <= 100:
            raise RuntimeSpecError(f"cgroup: linux.resources.memory.swappiness must be 0-100, got {sw}")
        cg.write(f"{d}/memory.swappiness", sw)
    if mem.get("disableOOMKiller"):
        cg.write(f"{d}/memory.oom_control", 1)


def _cpu(cg: Cgroup, cpu: dict[str, Any]) -> None:
    if not cpu:
        return
    files = [
        ("shares", "cpu.shares"),
        ("period", "cpu.cfs_period_us"),
        ("quota", "cpu.cfs_quota_us"),
        ("burst", "cpu.cfs_burst_us"),
        ("realtimePeriod", "cpu.rt_period_us"),
        ("realtimeRuntime", "cpu.rt_runtime_us"),
        ("idle", "cpu.idle"),
    ]
    wanted = [(k, f) for k, f in files if cpu.get(k) is not None]
    if wanted and (d := _ctrl(cg, "cpu", "cpu")):
        for key, f in wanted:
            value = _num(cpu[key], f"cpu.{key}")
            if key == "burst" and not cg.has(f"{d}/{f}"):
                cg.warn("cgroup: linux.resources.cpu.burst ignored: not supported by this kernel")
                continue
            cg.write(f"{d}/{f}", value)
    for key in ("cpus", "mems"):
        if cpu.get(key) and (d := _ctrl(cg, "cpuset", f"cpu.{key}")):
            cg.write(f"{d}/cpuset.{key}", cpu[key])


def _blkio(cg: Cgroup, bio: dict[str, Any]) -> None:
    if not bio:
        return
    d = _ctrl(cg, "blkio", "blockIO")
    if d is None:
        return
    for key, names in (("weight", ("blkio.weight", "blkio.bfq.weight")), ("leafWeight", ("blkio.leaf_weight",))):
        if bio.get(key) is None:
            continue
        target = next((f"{d}/{n}" for n in names if cg.has(f"{d}/{n}")), None)
        if target is None:
            cg.warn(f"cgroup: linux.resources.blockIO.{key} ignored: this kernel has no {names[0]} (no CFQ/BFQ weight)")
        else:
            cg.write(target, _num(bio[key], f"blockIO.{key}"))
    for dev in bio.get("weightDevice") or []:
        target = next((f"{d}/{n}" for n in ("blkio.weight_device", "blkio.bfq.weight_device") if cg.has(f"{d}/{n}")), None)
        if target is None:
            cg.warn("cgroup: linux.resources.blockIO.weightDevice ignored: not supported by this kernel")
            break
        if dev.get("weight") is not None:
            cg.write(target, f"{dev['major']}:{dev['minor']} {dev['weight']}")
    for key, f in (
        ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
        ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
        ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
        ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
    ):
        for dev in bio.get(key) or []:
            cg.write(f"{d}/{f}", f"{dev['major']}:{dev['minor']} {dev['rate']}")


def device_rule(rule: dict[str, Any]) -> str:
    """One OCI device rule as the v1 devices.allow/deny line: `type major:minor access`."""
    kind = rule.get("type") or "a"
    if kind not in ("a", "b", "c"):
        raise RuntimeSpecError(f"cgroup: linux.resources.devices: type must be a, b or c, got {kind!r}")
    access = rule.get("access") or "rwm"
    if not access or set(access) - set("rwm"):
        raise RuntimeSpecError(f"cgroup: linux.resources.devices: access must be made of r, w, m, got {access!r}")
    major = rule.get("major")
    minor = rule.get("minor")
    mj = "*" if major is None or major < 0 else str(major)
    mn = "*" if minor is None or minor < 0 else str(minor)
    return f"{kind} {mj}:{mn} {access}"


# The OCI default devices (and mknod of any node): always allowed after the spec's rules, as runc does.
DEFAULT_ALLOWED = [
    {"allow": True, "type": t, "major": mj, "minor": mn, "access": acc}
    for t, mj, mn, acc in (
        ("c", None, None, "m"), ("b", None, None, "m"), ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
        ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
        ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
    )
]  # fmt: skip


def allow_rules(linux_devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Allow rules for the nodes of OCI linux.devices (the runtime appends them to resources.devices)."""
    return [
        {"allow": True, "type": d.get("type", "c").replace("u", "c"), "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"}
        for d in linux_devices
        if d.get("type") in ("c", "b", "u")
    ]


def write_devices(cg: Cgroup, d: str, rules: list[dict[str, Any]]) -> None:
    """Start from deny-all (as runc does), apply the rules in order, then allow the default devices."""
    cg.write(f"{d}/devices.deny", "a")
    for rule in [*rules, *DEFAULT_ALLOWED]:
        line = device_rule(rule)
        if line == "a *:* rwm":
            line = "a"
        target = "devices.allow" if rule.get("allow") else "devices.deny"
        try:
            cg.fs.write(f"{d}/{target}", line)
        except OSError as e:
            if e.errno == _errno.EPERM and rule.get("allow"):
                cg.warn(f"cgroup: device rule {line!r} not granted: the host's own device cgroup denies it")
                continue
            from stackd.engine.runtime.cgroups_layout import fs_error

            raise fs_error(f"write {line!r} to", f"{d}/{target}", e)


def _hugetlb(cg: Cgroup, limits: list[dict[str, Any]]) -> None:
    for h in limits:
        size, limit = h.get("pageSize"), _num(h.get("limit"), "hugepageLimits.limit")
        if "hugetlb" in cg.v1:
            cg.write(f"{cg.v1['hugetlb']}/hugetlb.{size}.limit_in_bytes", limit)
        elif cg.unified and "hugetlb" in cg.v2_controllers():
            cg.write(f"{cg.unified}/hugetlb.{size}.max", limit)
        else:
            cg.warn("cgroup: linux.resources.hugepageLimits ignored: no hugetlb controller on this host")
            return


def _network(cg: Cgroup, net: dict[str, Any]) -> None:
    if net.get("classID") is not None and (d := _ctrl(cg, "net_cls", "network.classID")):
        cg.write(f"{d}/net_cls.classid", _num(net["classID"], "network.classID"))
    prios = net.get("priorities") or []
    if prios and (d := _ctrl(cg, "net_prio", "network.priorities")):
        for p in prios:
            cg.write(f"{d}/net_prio.ifpriomap", f"{p['name']} {p['priority']}")


def _unified_on_hybrid(cg: Cgroup, unified: dict[str, Any]) -> None:
    """On hybrid hosts, `unified` keys work for controllers that live on the cgroup2 mount."""
    have = cg.v2_controllers() | {"cgroup"}
    for key, value in unified.items():
        if "/" in key or key.startswith(".") or not cg.unified or key.split(".", 1)[0] not in have:
            raise RuntimeSpecError(
                f"cgroup: linux.resources.unified[{key!r}]: unified keys need cgroup v2; on this host the cgroup2 "
                f"mount only has {sorted(have - {'cgroup'}) or 'no'} controllers"
            )
        cg.write(f"{cg.unified}/{key}", value)


def oom_killed(cg: Cgroup) -> bool:
    text = cg.read(f"{cg.v1['memory']}/memory.oom_control")
    fields = dict(line.split(None, 1) for line in text.splitlines() if " " in line)
    if "oom_kill" in fields:
        return int(fields["oom_kill"]) > 0
    return fields.get("under_oom", "0").strip() == "1"


def _read_int(cg: Cgroup, path: str) -> int | None:
    try:
        return int(cg.fs.read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stats(cg: Cgroup) -> dict[str, Any]:
    out: dict[str, Any] = {"memory": {}, "cpu": {}, "pids": {}}
    if d := cg.v1.get("memory"):
        limit = _read_int(cg, f"{d}/memory.limit_in_bytes")
        out["memory"] = {
            "usage": _read_int(cg, f"{d}/memory.usage_in_bytes"),
            "max_usage": _read_int(cg, f"{d}/memory.max_usage_in_bytes"),
            "limit": None if limit is None or limit >= UNLIMITED else limit,
        }
    if d := cg.v1.get("cpuacct"):
        cpu: dict[str, Any] = {"usage_ns": _read_int(cg, f"{d}/cpuacct.usage")}
        try:
            ticks = dict(line.split() for line in cg.fs.read(f"{d}/cpuacct.stat").splitlines())
            cpu["user_ns"] = int(ticks["user"]) * 10_000_000  # USER_HZ is 100
            cpu["system_ns"] = int(ticks["system"]) * 10_000_000
        except (OSError, KeyError, ValueError):
            pass
        out["cpu"] = cpu
    if d := cg.v1.get("pids"):
        mx = cg.fs.read(f"{d}/pids.max").strip() if cg.has(f"{d}/pids.max") else "max"
        out["pids"] = {"current": _read_int(cg, f"{d}/pids.current"), "limit": None if mx == "max" else int(mx)}
    return out
