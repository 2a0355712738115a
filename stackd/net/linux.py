"""The real `Kernel`: netlink through pyroute2 (and raw sockets in a netns), sysctls, nftables via libnftables."""

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


def _err(step: str, obj: str, exc: BaseException) -> NetKernelError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    name = errno.errorcode.get(code, str(code)) if isinstance(code, int) else ""
    return NetKernelError(f"{step} {obj}: {exc}" + (f" ({name})" if name else ""))


class LinuxKernel:
    """Kernel calls as root on this host (one netlink socket for the host namespace)."""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._bridges: dict[str, int] = {}
        self._forward_s: list[str] | None = None
        self._nft_ctx: Any = None

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._nft_ctx is not None:
            lib = _libnft()
            if lib is not None:
                with _nft_lock:
                    lib.nft_ctx_free(self._nft_ctx)
            self._nft_ctx = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _index(self, name: str) -> int | None:
        """The link's ifindex: read from sysfs (netlink's lookup dumps every link: ~6 ms with a
        few dozen veths), else asked over netlink."""
        if os.path.isdir("/sys/class/net") and "/" not in name:
            try:
                with open(f"/sys/class/net/{name}/ifindex", "rb") as f:
                    return int(f.read())
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                pass
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _bridge_index(self, name: str, *, fresh: bool = False) -> int | None:
        """The bridge's ifindex, remembered between attaches (refreshed when a call fails)."""
        if fresh or name not in self._bridges:
            idx = self._index(name)
            if idx is None:
                self._bridges.pop(name, None)
                return None
            self._bridges[name] = idx
        return self._bridges[name]

    def link_exists(self, name: str) -> bool:
        if os.path.isdir("/sys/class/net"):  # a stat, not a netlink round trip
            return os.path.lexists(f"/sys/class/net/{name}")
        return self._index(name) is not None

    def bridge_create(self, name: str, mtu: int, addresses: tuple[str, ...]) -> None:
        self._bridges.pop(name, None)
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
        self._bridges.pop(name, None)
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
        """One netlink request makes the pair (host end enslaved and up, peer created in the
        netns); one batch over a socket in the netns addresses, routes and sets it up."""
        from stackd.net import linux_ns

        if self._bridge_index(bridge) is None:
            raise NetKernelError(f"attaching {host_name}: bridge {bridge} does not exist")
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _err("opening netns", netns_path, exc)
        try:
            peer: dict[str, Any] = {"ifname": link.name, "net_ns_fd": fd, "mtu": link.mtu}
            if link.mac:
                peer["address"] = link.mac
            for fresh in (False, True):
                br = self._bridge_index(bridge, fresh=fresh)
                if br is None:
                    raise NetKernelError(f"attaching {host_name}: bridge {bridge} does not exist")
                try:
                    self.ipr.link("add", ifname=host_name, kind="veth", mtu=link.mtu, master=br,
                                  state="up", peer=peer)
                    break
                except Exception as exc:
                    if fresh or getattr(exc, "code", None) == errno.EEXIST:
                        raise _err("creating veth", f"{host_name} in {netns_path}", exc)
            try:
                if hairpin:
                    with open(f"/sys/class/net/{host_name}/brport/hairpin_mode", "w") as f:
                        f.write("1")
                with linux_ns.rtnl_in_fd(fd) as nl:
                    linux_ns.configure(nl, link.name, link.addresses, link.gateways)
            except Exception as exc:
                self.link_delete(host_name)
                raise _err("configuring veth", f"{host_name}/{link.name} in {netns_path}", exc)
        finally:
            os.close(fd)

    def ns_link_delete(self, netns_path: str, name: str) -> None:
        from stackd.net import linux_ns

        try:
            with linux_ns.rtnl_in(netns_path) as nl:
                linux_ns.delete_link(nl, name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _err("deleting link", f"{name} in {netns_path}", exc)

    def links_wait_gone(self, names: list[str], timeout: float) -> list[str]:
        from stackd.net import linux_ns

        return linux_ns.wait_links_gone(names, timeout)

    def netns_create(self, path: str) -> None:
        from stackd.net import linux_ns

        linux_ns.create_netns(path)

    def netns_delete(self, path: str) -> None:
        from stackd.net import linux_ns

        linux_ns.delete_netns(path)

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

    def _nft(self, payload: dict[str, Any]) -> None:
        """Run JSON nftables commands through libnftables in-process (`nft -j -f -` without it)."""
        text = json.dumps(payload)
        lib = _libnft()
        if lib is not None:
            with _nft_lock:
                if self._nft_ctx is None:
                    self._nft_ctx = lib.nft_ctx_new(0)
                    lib.nft_ctx_output_set_flags(self._nft_ctx, 1 << 4)  # NFT_CTX_OUTPUT_JSON
                    lib.nft_ctx_buffer_output(self._nft_ctx)
                    lib.nft_ctx_buffer_error(self._nft_ctx)
                rc = lib.nft_run_cmd_from_buffer(self._nft_ctx, text.encode())
                err = (lib.nft_ctx_get_error_buffer(self._nft_ctx) or b"").decode(errors="replace")
                lib.nft_ctx_get_output_buffer(self._nft_ctx)  # drop what a command printed
            if rc != 0:
                raise NetKernelError(f"nft: {err.strip() or 'failed'}")
            return
        proc = subprocess.run(["nft", "-j", "-f", "-"], input=text, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise NetKernelError(f"nft: {proc.stderr.strip()}")

    def nft_apply(self, commands: list[dict[str, Any]]) -> None:
        self._nft({"nftables": commands})

    def nft_table_exists(self, family: str, name: str) -> bool:
        try:
            self._nft({"nftables": [{"list": {"table": {"family": family, "name": name}}}]})
        except NetKernelError:
            return False
        return True

    def nft_delete_table(self, family: str, name: str) -> None:
        if self.nft_table_exists(family, name):
            self._nft({"nftables": [{"delete": {"table": {"family": family, "name": name}}}]})

    def _iptables_s(self) -> list[str]:
        proc = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=False)
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    def forward_policy_drops(self) -> bool:
        """Lists the chain once; the `iptables_forward_rules` call that follows reuses it."""
        self._forward_s = lines = self._iptables_s()
        return any(line.split()[:3] == ["-P", "FORWARD", "DROP"] for line in lines if line)

    def iptables_forward_rules(self) -> list[list[str]]:
        import shlex

        lines, self._forward_s = self._forward_s, None
        if lines is None:
            lines = self._iptables_s()
        return [shlex.split(line) for line in lines if line.startswith("-A FORWARD")]

    def iptables(self, args: list[str]) -> None:
        self._forward_s = None
        proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NetKernelError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")

    def iptables_batch(self, commands: list[list[str]]) -> None:
        if not commands:
            return
        self._forward_s = None
        text = "*filter\n" + "".join(" ".join(_restore_word(a) for a in c) + "\n" for c in commands) + "COMMIT\n"
        proc = subprocess.run(["iptables-restore", "-w", "--noflush"], input=text, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise NetKernelError(f"iptables-restore: {proc.stderr.strip()} (commands: {text.strip()!r})")


def _restore_word(arg: str) -> str:
    """`arg` as iptables-restore reads it (double quotes around anything but plain words)."""
    if arg and all(ch.isalnum() or ch in "_.:,/!=+-" for ch in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


_nft_lock = threading.Lock()  # a libnftables context is not thread-safe
_nft_lib: list[Any] = []


def _libnft() -> Any:
    """libnftables through ctypes (None when the library is not installed)."""
    if not _nft_lib:
        import ctypes

        try:
            lib: Any = ctypes.CDLL("libnftables.so.1")
        except OSError:
            lib = None
        if lib is not None:
            vp = ctypes.c_void_p
            lib.nft_ctx_new.restype = vp
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
                getattr(lib, fn).argtypes = [vp]
            lib.nft_ctx_output_set_flags.argtypes = [vp, ctypes.c_uint]
            lib.nft_run_cmd_from_buffer.argtypes = [vp, ctypes.c_char_p]
            for fn in ("nft_ctx_get_error_buffer", "nft_ctx_get_output_buffer"):
                getattr(lib, fn).restype = ctypes.c_char_p
                getattr(lib, fn).argtypes = [vp]
        _nft_lib.append(lib)
    return _nft_lib[0]


def warm_up() -> None:
    """Load libnftables now (`stackd daemon` calls this once; dlopen leaves no descriptor open)."""
    _libnft()


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
