"""The real `Kernel`: netlink through pyroute2, sysctls through /proc/sys, nftables through `nft -j`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from stackd.net.kernel import NetKernelError, NsLink

IFA_F_NODAD = 0x02
_ns_lock = threading.Lock()  # setns is per thread, but pyroute2's socket setup is not re-entrant


def _err(step: str, obj: str, exc: BaseException) -> NetKernelError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    name = errno.errorcode.get(code, str(code)) if isinstance(code, int) else ""
    return NetKernelError(f"{step} {obj}: {exc}" + (f" ({name})" if name else ""))


class LinuxKernel:
    """Kernel calls as root on this host (one netlink socket for the host namespace)."""

    def __init__(self) -> None:
        self._ipr: Any = None

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @contextlib.contextmanager
    def _in_netns(self, path: str) -> Iterator[Any]:
        """An IPRoute whose netlink socket lives in the netns at `path`."""
        from pyroute2 import IPRoute, netns

        fd = os.open(path, os.O_RDONLY)
        try:
            with _ns_lock:
                netns.pushns(fd)
                try:
                    ipr = IPRoute()
                    ipr.get_links()  # the socket binds inside the namespace now
                finally:
                    netns.popns()
        finally:
            os.close(fd)
        try:
            yield ipr
        finally:
            ipr.close()

    def _index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def link_exists(self, name: str) -> bool:
        return self._index(name) is not None

    def bridge_create(self, name: str, mtu: int, addresses: tuple[str, ...]) -> None:
        try:
            idx = self._index(name)
            if idx is None:
                # A fixed MAC, as Docker sets: otherwise the bridge takes the lowest MAC of its
                # ports and changes it as containers come and go, breaking the ARP caches of
                # containers that stay (gateway and DNS unreachable after a recreate).
                self.ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=bridge_mac(name))
                idx = self._index(name)
            else:
                self.ipr.link("set", index=idx, mtu=mtu)
            for cidr in addresses:
                addr, _, plen = cidr.partition("/")
                kw = {"family": socket.AF_INET6, "flags": IFA_F_NODAD} if ":" in addr else {}
                with _ignore(errno.EEXIST):
                    self.ipr.addr("add", index=idx, address=addr, prefixlen=int(plen), **kw)
            self.ipr.link("set", index=idx, state="up")
        except Exception as exc:
            if isinstance(exc, NetKernelError):
                raise
            raise _err("creating bridge", name, exc)

    def link_delete(self, name: str) -> None:
        idx = self._index(name)
        if idx is None:
            return
        try:
            self.ipr.link("del", index=idx)
        except Exception as exc:
            if getattr(exc, "code", None) != errno.ENODEV:
                raise _err("deleting link", name, exc)

    def veth_create(
        self, host_name: str, bridge: str, netns_path: str, link: NsLink, *, hairpin: bool = True
    ) -> None:
        br = self._index(bridge)
        if br is None:
            raise NetKernelError(f"attaching {host_name}: bridge {bridge} does not exist")
        try:
            fd = os.open(netns_path, os.O_RDONLY)
        except OSError as exc:
            raise _err("opening netns", netns_path, exc)
        try:
            peer: dict[str, Any] = {"ifname": link.name, "net_ns_fd": fd, "mtu": link.mtu}
            if link.mac:
                peer["address"] = link.mac
            self.ipr.link("add", ifname=host_name, kind="veth", mtu=link.mtu, peer=peer)
        except Exception as exc:
            raise _err("creating veth", f"{host_name} in {netns_path}", exc)
        finally:
            os.close(fd)
        try:
            idx = self._index(host_name)
            self.ipr.link("set", index=idx, master=br, state="up")
            if hairpin:
                with open(f"/sys/class/net/{host_name}/brport/hairpin_mode", "w") as f:
                    f.write("1")
            with self._in_netns(netns_path) as nipr:
                lo = nipr.link_lookup(ifname="lo")
                if lo:
                    nipr.link("set", index=lo[0], state="up")
                cidx = nipr.link_lookup(ifname=link.name)[0]
                for cidr in link.addresses:
                    addr, _, plen = cidr.partition("/")
                    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
                    kw = {"flags": IFA_F_NODAD} if family == socket.AF_INET6 else {}
                    nipr.addr("add", index=cidx, address=addr, prefixlen=int(plen), family=family,
                              **kw)
                nipr.link("set", index=cidx, state="up")
                for gw in link.gateways:
                    family = socket.AF_INET6 if ":" in gw else socket.AF_INET
                    dst = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
                    with _ignore(errno.EEXIST):
                        nipr.route("add", dst=dst, gateway=gw, family=family)
        except Exception as exc:
            self.link_delete(host_name)
            raise _err("configuring veth", f"{host_name}/{link.name} in {netns_path}", exc)

    def ns_link_delete(self, netns_path: str, name: str) -> None:
        if not os.path.exists(netns_path):
            return
        with self._in_netns(netns_path) as nipr:
            found = nipr.link_lookup(ifname=name)
            if found:
                with _ignore(errno.ENODEV):
                    nipr.link("del", index=found[0])

    def host_routes(self) -> list[str]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in self.ipr.get_routes(family=family, table=254):
                dst = r.get_attr("RTA_DST")
                plen = r["dst_len"]
                if dst is None:
                    dst = "0.0.0.0" if family == socket.AF_INET else "::"
                if family == socket.AF_INET6 and (dst.startswith("fe80:") or dst.startswith("ff")):
                    continue
                out.append(f"{dst}/{plen}")
        return out

    def sysctl_get(self, key: str) -> str | None:
        try:
            with open(f"/proc/sys/{key}") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def sysctl_set(self, key: str, value: str) -> None:
        try:
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
        except OSError as exc:
            raise _err("setting sysctl", key, exc)

    def _nft(self, payload: dict[str, Any] | None, *args: str) -> str:
        proc = subprocess.run(
            ["nft", "-j", *args], input=json.dumps(payload) if payload is not None else None,
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise NetKernelError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def nft_apply(self, commands: list[dict[str, Any]]) -> None:
        self._nft({"nftables": commands}, "-f", "-")

    def nft_table_exists(self, family: str, name: str) -> bool:
        proc = subprocess.run(["nft", "list", "table", family, name], capture_output=True, check=False)
        return proc.returncode == 0

    def nft_delete_table(self, family: str, name: str) -> None:
        if self.nft_table_exists(family, name):
            self._nft({"nftables": [{"delete": {"table": {"family": family, "name": name}}}]}, "-f", "-")

    def _iptables_s(self) -> list[str]:
        proc = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=False)
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    def forward_policy_drops(self) -> bool:
        return any(line.split()[:3] in (["-P", "FORWARD", "DROP"],) for line in self._iptables_s() if line)

    def iptables_forward_rules(self) -> list[list[str]]:
        import shlex

        return [shlex.split(line) for line in self._iptables_s() if line.startswith("-A FORWARD")]

    def iptables(self, args: list[str]) -> None:
        proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NetKernelError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")


@contextlib.contextmanager
def _ignore(code: int) -> Iterator[None]:
    """Ignore a pyroute2 NetlinkError with this errno (EEXIST on re-adding, ENODEV on deleting)."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "code", None) != code:
            raise


def bridge_mac(name: str) -> str:
    """A stable, locally administered unicast MAC for bridge `name`."""
    import hashlib

    digest = hashlib.sha256(name.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
