"""The network API the container manager calls: networks, attachments, published ports, restore.

State lives in `<state_root>/net/state.json` (atomic replace, under an flock so several CLI
processes can act at once); the DNS server's view is derived from it into `net/dns.json`.
Attach containers to their networks in priority order: the first non-internal network of a
container carries its default route (Docker's highest `priority` wins the same way).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stackd.errors import ConflictError, NotFoundError, UsageError
from stackd.net import bridge, dns_server, ipam, nat, ports, resolvconf, veth
from stackd.net.ipam import Pool, SubnetConfig
from stackd.net.kernel import Kernel
from stackd.net.records import (
    Attachment,
    IpamConfig,
    NetworkRecord,
    NetworkSpec,
    State,
    attachment_from,
    network_from,
)

__all__ = ["DEFAULT_NETWORK", "Attachment", "IpamConfig", "NetManager", "NetworkRecord", "NetworkSpec", "State"]

DEFAULT_NETWORK = "bridge"


class NetManager:
    """Networks for one state root. `kernel` is `linux.LinuxKernel()` or `fake.FakeKernel()`."""

    def __init__(
        self,
        state_root: str | Path,
        kernel: Kernel,
        *,
        pools: Sequence[Pool] = ipam.DEFAULT_POOLS,
        link_prefix: str = "sd",
        table: str = nat.TABLE,
        upstreams: Sequence[tuple[str, int]] | None = None,
        dns_port: int = 53,
        run_dns: bool = True,
    ) -> None:
        self.root = Path(state_root)
        self.dir = self.root / "net"
        self.kernel = kernel
        self.pools = tuple(pools)
        self.prefix = link_prefix
        self.table = table
        self._upstreams = list(upstreams) if upstreams is not None else None
        self.dns_port = dns_port
        self.run_dns = run_dns
        self._batch_lock = threading.Lock()
        self._dns_lock = threading.Lock()
        self._batch_depth = 0
        self._dns_pending = False
        self._parsed: tuple[bytes, State] | None = None

    # -- state ------------------------------------------------------------------------------
    def _load(self) -> State:
        """The state (a fresh State over shared frozen records). The parsed records are kept for
        as long as the file's bytes stay the same: reading is cheap, parsing is not, and one
        `up` reads the file several times per container. (The bytes are the key: inode numbers
        are reused and timestamps are coarse, and other NetManagers write the same file.)"""
        try:
            with open(self.dir / "state.json", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return State()
        cached = self._parsed
        if cached is None or cached[0] != data:
            raw = json.loads(data)
            cached = self._parsed = (data, State(
                {n["name"]: network_from(n) for n in raw["networks"]},
                [attachment_from(a) for a in raw["attachments"]],
                [ports.PortBinding(**p) for p in raw["ports"]],
            ))
        st = cached[1]
        return State(dict(st.networks), list(st.attachments), list(st.ports))

    def _save(self, st: State, *, durable: bool = True) -> None:
        """Write state.json atomically. Only network records need fsync: attachments and ports
        describe kernel objects (veths in netns under the run root) that a reboot loses anyway,
        and restore() drops those whose netns is gone."""
        raw = {
            "networks": [asdict(n) for n in st.networks.values()],
            "attachments": [asdict(a) for a in st.attachments],
            "ports": [asdict(p) for p in st.ports],
        }
        _atomic_write(self.dir / "state.json", json.dumps(raw, indent=1), durable=durable)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[State]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._load()

    # -- queries ----------------------------------------------------------------------------
    def networks(self) -> list[NetworkRecord]:
        return sorted(self._load().networks.values(), key=lambda n: n.name)

    def network(self, name: str) -> NetworkRecord:
        st = self._load()
        if name not in st.networks:
            raise NotFoundError(f"network {name} not found")
        return st.networks[name]

    def attachments(self, container_id: str | None = None) -> list[Attachment]:
        return [a for a in self._load().attachments
                if container_id is None or a.container_id == container_id]

    def published(self, container_id: str | None = None) -> list[ports.PortBinding]:
        return [p for p in self._load().ports if container_id is None or p.container_id == container_id]

    # -- networks ---------------------------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> NetworkRecord:
        if spec.driver != "bridge":
            raise UsageError(f"network {spec.name}: driver {spec.driver!r} is not supported (only bridge)")
        with self._locked() as st:
            if spec.name in st.networks:
                raise ConflictError(f"network with name {spec.name} already exists")
            net_id = bridge.network_id(spec.name, str(self.root))
            taken = ipam.routes_in_the_way(self.kernel.host_routes())
            for other in st.networks.values():
                taken += [ipaddress.ip_network(s.subnet) for s in other.subnets]
            subnets = self._subnets(spec, net_id, taken)
            name = bridge.bridge_name(self.prefix, net_id[:12], spec.options)
            if any(n.bridge == name for n in st.networks.values()):
                raise ConflictError(f"network {spec.name}: bridge {name} is used by another network")
            rec = NetworkRecord(
                spec.name, net_id, name, spec.driver, spec.internal, spec.enable_ipv6,
                tuple(subnets), dict(spec.labels), dict(spec.options),
                bridge.mtu(spec.options), spec.attachable, spec.dns, time.time(),
            )
            bridge.create(self.kernel, name, rec.mtu, subnets, adopt=False)
            st.networks[spec.name] = rec
            try:
                self._apply_rules(st)
            except Exception:
                del st.networks[spec.name]
                bridge.delete(self.kernel, name)
                self._apply_rules(st)
                raise
            self._save(st)
        return rec

    def _subnets(self, spec: NetworkSpec, net_id: str, taken: list[ipam.Network]) -> list[SubnetConfig]:
        out: list[SubnetConfig] = []
        for cfg in spec.ipam:
            if not cfg.subnet:
                continue
            net = ipaddress.ip_network(cfg.subnet)
            if any(net.version == t.version and net.overlaps(t) for t in taken):
                raise ConflictError(f"network {spec.name}: subnet {net} overlaps an existing network or host route")
            out.append(ipam.make_subnet_config(net, gateway=cfg.gateway, ip_range=cfg.ip_range,
                                               aux=cfg.aux_addresses))
            taken.append(net)
        if not any(ipaddress.ip_network(s.subnet).version == 4 for s in out):
            out.insert(0, ipam.make_subnet_config(ipam.choose_subnet(self.pools, taken)))
        if spec.enable_ipv6 and not any(ipaddress.ip_network(s.subnet).version == 6 for s in out):
            out.append(ipam.make_subnet_config(ipam.ula_subnet(net_id, taken)))
        return out

    def ensure_network(self, spec: NetworkSpec) -> NetworkRecord:
        """The network by name, created if missing (the default network, `external` checks)."""
        try:
            return self.network(spec.name)
        except NotFoundError:
            pass
        try:
            return self.create_network(spec)
        except ConflictError:
            if spec.name not in self._load().networks:
                raise
            return self.network(spec.name)  # made meanwhile by another thread or process

    def ensure_default(self) -> NetworkRecord:
        return self.ensure_network(NetworkSpec(
            DEFAULT_NETWORK, dns=False,
            options={bridge.OPT_NAME: f"{self.prefix}0"[: bridge.IFNAMSIZ]},
        ))

    def remove_network(self, name: str) -> None:
        with self._locked() as st:
            rec = st.networks.get(name)
            if rec is None:
                raise NotFoundError(f"network {name} not found")
            users = sorted({a.container_id[:12] for a in st.attachments if a.network == name})
            if users:
                raise ConflictError(f"network {name} has active endpoints: {', '.join(users)}")
            del st.networks[name]
            # The kernel takes ~40 ms to unregister a bridge and iptables as long to drop its
            # rules (which name it only by interface name): both at once.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                deleting = pool.submit(bridge.delete, self.kernel, rec.bridge)
                self._apply_rules(st)
            deleting.result()  # what the deletion raised, if anything
            self._save(st)
            self._sync_dns(st)

    # -- attachments ------------------------------------------------------------------------
    def attach(
        self,
        container_id: str,
        netns_path: str,
        network: str,
        *,
        aliases: Iterable[str] = (),
        names: Iterable[str] = (),
        ipv4: str = "",
        ipv6: str = "",
        mac: str = "",
        priority: int = 0,
    ) -> Attachment:
        with self._locked() as st:
            rec = st.networks.get(network)
            if rec is None:
                raise NotFoundError(f"network {network} not found")
            mine = [a for a in st.attachments if a.container_id == container_id]
            if any(a.network == network for a in mine):
                raise ConflictError(f"container {container_id[:12]} is already attached to network {network}")
            if any(a.netns_path != netns_path for a in mine):
                raise ConflictError(f"container {container_id[:12]} is attached with another netns")
            used = [a for a in st.attachments if a.network == network]
            addrs: list[str] = []
            a4 = a6 = ""
            p4 = p6 = 0
            for sub in rec.subnets:
                v = ipaddress.ip_network(sub.subnet).version
                if v == 4:
                    a4 = ipam.allocate(sub, [u.ipv4 for u in used if u.ipv4], ipv4)
                    p4 = sub.prefix()
                    addrs.append(f"{a4}/{p4}")
                else:
                    a6 = ipam.allocate(sub, [u.ipv6 for u in used if u.ipv6], ipv6)
                    p6 = sub.prefix()
                    addrs.append(f"{a6}/{p6}")
            if ipv6 and not a6:
                raise UsageError(f"network {network} has no IPv6 subnet for address {ipv6}")
            the_mac = veth.check_mac(mac) if mac else veth.mac_for(a4)
            if any(u.mac == the_mac for u in used):
                raise ConflictError(f"MAC address {the_mac} is already in use on network {network}")
            with_gw = not rec.internal and not any(a.gateway for a in mine)
            gws = tuple(g for g in (rec.gateway(4), rec.gateway(6)) if g) if with_gw else ()
            host = veth.host_name(self.prefix, container_id, network)
            ifname = _free_ifname([a.ifname for a in mine])
            att = Attachment(container_id, network, netns_path, ifname, host, a4, a6, the_mac,
                             tuple(dict.fromkeys(aliases)), tuple(dict.fromkeys(names)), with_gw,
                             priority, p4, p6)
            st.attachments.append(att)  # recorded first: the addresses are ours while the kernel works
            self._save(st, durable=False)
        try:  # outside the lock, so containers attach in parallel
            veth.join(self.kernel, host, rec.bridge, netns_path, ifname, tuple(addrs),
                      mtu=rec.mtu, mac=the_mac, gateways=gws)
        except BaseException:
            with self._locked() as st:
                st.attachments = [a for a in st.attachments
                                  if not (a.container_id == container_id and a.network == network)]
                self._save(st, durable=False)
            raise
        if rec.dns:
            with self._locked() as st:
                reload = self._sync_dns(st, signal=False)
            if reload:
                self._reload_dns()
        return att

    def detach(self, container_id: str, network: str | None = None, *, netns_gone: bool = False) -> None:
        """Detach from one network (or all); its published ports go when its last network does.

        `netns_gone`: the container's netns was just deleted, so the kernel removes its veth
        pairs itself (batched, far cheaper than one `link del` each); wait for that instead."""
        with self._locked() as st:
            gone = [a for a in st.attachments if a.container_id == container_id
                    and (network is None or a.network == network)]
            if network is not None and not gone:
                raise NotFoundError(f"container {container_id[:12]} is not attached to network {network}")
            for a in gone:
                if not netns_gone:
                    veth.leave(self.kernel, a.host_veth, a.netns_path, a.ifname)
                st.attachments.remove(a)
            left_ips = {a.ipv4 for a in st.attachments} | {a.ipv6 for a in st.attachments}
            st.ports = [p for p in st.ports if p.container_id != container_id or p.container_ip in left_ips]
            self._apply_rules(st)
            self._save(st, durable=False)
            reload = False
            if any(st.networks[a.network].dns for a in gone if a.network in st.networks):
                reload = self._sync_dns(st, signal=False)
        if reload:
            self._reload_dns()
        if netns_gone:
            self._await_gone([a.host_veth for a in gone])

    def rename(self, container_id: str, old: str, new: str) -> None:
        """A container was renamed: its DNS name follows (a recreate renames the new container)."""
        with self._locked() as st:
            mine = [a for a in st.attachments if a.container_id == container_id and old in a.names]
            for a in mine:
                st.attachments[st.attachments.index(a)] = dataclasses.replace(
                    a, names=tuple(new if n == old else n for n in a.names))
            if not mine:
                return
            self._save(st, durable=False)
            reload = any(st.networks[a.network].dns for a in mine if a.network in st.networks)
            reload = reload and self._sync_dns(st, signal=False)
        if reload:
            self._reload_dns()

    def _await_gone(self, links: list[str], timeout: float = 2.0) -> None:
        """Wait for links the kernel deletes with their netns; delete the stragglers."""
        for name in self.kernel.links_wait_gone(links, timeout):
            self.kernel.link_delete(name)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many attach/detach calls (possibly from several threads), one DNS reload at the end."""
        with self._batch_lock:
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._batch_lock:
                self._batch_depth -= 1
                last = self._batch_depth == 0 and self._dns_pending
                if last:
                    self._dns_pending = False
            if last:
                with self._locked() as st:
                    self._sync_dns(st, now=True)

    def flush_dns(self) -> None:
        """Inside a batch: hand the DNS server the names attached so far, if any are pending (a
        stack's containers attach in a batch and call this before they start, so a container
        never runs before the server knows its peers, and N attachments cost a few reloads)."""
        with self._batch_lock:
            pending, self._dns_pending = self._dns_pending, False
        if pending:
            with self._locked() as st:
                reload = self._sync_dns(st, now=True, signal=False)
            if reload:
                self._reload_dns()

    # -- ports ------------------------------------------------------------------------------
    def publish(self, container_id: str, specs: Iterable[str | Mapping[str, Any] | ports.PortSpec]) -> list[ports.PortBinding]:
        parsed = ports.parse(specs)
        with self._locked() as st:
            mine = sorted((a for a in st.attachments if a.container_id == container_id
                           and not st.networks[a.network].internal), key=lambda a: -a.priority)
            ip4 = next((a.ipv4 for a in mine if a.ipv4), "")
            ip6 = next((a.ipv6 for a in mine if a.ipv6), "")
            made = ports.plan(container_id, parsed, ip4, ip6, st.ports)
            st.ports.extend(made)
            self._apply_rules(st)
            self._save(st, durable=False)
        return made

    def unpublish(self, container_id: str) -> None:
        with self._locked() as st:
            st.ports = [p for p in st.ports if p.container_id != container_id]
            self._apply_rules(st)
            self._save(st, durable=False)

    # -- kernel state from records ----------------------------------------------------------
    def _apply_rules(self, st: State, *, force: bool = False) -> None:
        """Make the kernel's rules match `st`; skipped when they equal the last ones applied
        (`net/rules.key`), as most attach/detach calls change no rule."""
        nets = [nat.NatNetwork(n.bridge, tuple(s.subnet for s in n.subnets), n.internal)
                for n in sorted(st.networks.values(), key=lambda n: n.name)]
        by_ip = {}
        for a in st.attachments:
            br = st.networks[a.network].bridge
            by_ip[a.ipv4] = br
            by_ip[a.ipv6] = br
        dnats = [nat.Dnat(p.host_ip, p.host_port, p.protocol, p.container_ip, p.container_port,
                          by_ip.get(p.container_ip, "")) for p in st.ports]
        key = json.dumps([self.table, [asdict(n) for n in nets], [asdict(d) for d in dnats]])
        keyfile = self.dir / "rules.key"
        if not force:
            try:
                if keyfile.read_text() == key:
                    return
            except FileNotFoundError:
                pass
        # iptables' FORWARD accepts depend on the networks only: listed when those change
        fkey = json.dumps([self.table, [asdict(n) for n in nets]])
        ffile = self.dir / "forward.key"
        try:
            forward = force or ffile.read_text() != fkey
        except FileNotFoundError:
            forward = True
        for f in (keyfile, ffile) if forward else (keyfile,):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()  # unknown while applying: a failure leaves the next call to retry
        nat.apply(self.kernel, nets, dnats, self.table, forward=forward)
        _atomic_write(keyfile, key, durable=False)
        if forward:
            _atomic_write(ffile, fkey, durable=False)

    def _dns_config(self, st: State) -> dict[str, Any]:
        nets = []
        for n in sorted(st.networks.values(), key=lambda n: n.name):
            members = [a for a in st.attachments if a.network == n.name]
            if not n.dns or not members:
                continue
            records: dict[str, list[str]] = {}
            ptr: dict[str, str] = {}
            for a in members:
                for name in (*a.names, *a.aliases):
                    for ip in (a.ipv4, a.ipv6):
                        if ip and ip not in records.setdefault(name.lower(), []):
                            records[name.lower()].append(ip)
                for ip in (a.ipv4, a.ipv6):
                    if ip and a.names:
                        ptr[ip] = f"{a.names[0]}.{n.name}"
            listen = [g for g in (n.gateway(4), n.gateway(6)) if g]
            nets.append({"name": n.name, "listen": listen, "records": records, "ptr": ptr,
                         "subnets": [s.subnet for s in n.subnets]})
        served = {n["name"] for n in nets}
        clients: dict[str, list[str]] = {}
        for a in st.attachments:
            if a.network not in served:
                continue
            for b in st.attachments:
                if b.container_id == a.container_id:
                    for ip in (b.ipv4, b.ipv6):
                        if ip:
                            clients.setdefault(ip, []).append(a.network)
        ups = self._upstreams
        if ups is None:
            ups = resolvconf.upstreams(resolvconf.read_host_resolv())
        return {"upstreams": [list(u) for u in ups], "timeout": 2.0, "port": self.dns_port,
                "networks": nets, "clients": clients}

    def _sync_dns(self, st: State, *, now: bool = False, signal: bool = True) -> bool:
        """Write dns.json from `st`; stop the server when nothing is served. Returns whether the
        server must reload; with `signal` it is told here, else the caller calls `_reload_dns`
        (after releasing the state lock: the server reads the newest dns.json then)."""
        if not now and self._batch_depth:
            self._dns_pending = True
            return False
        cfg = self._dns_config(st)
        _atomic_write(self.dir / "dns.json", json.dumps(cfg), durable=False)  # derived data
        if not self.run_dns:
            return False
        if not cfg["networks"]:
            dns_server.stop(self.root)
            return False
        if signal:
            self._reload_dns()
        return True

    def _reload_dns(self) -> None:
        if self.run_dns:
            with self._dns_lock:  # one thread starts a missing server; the others then just ask
                dns_server.reload(self.root)

    def dns_server_for(self, network: str) -> str:
        """The nameserver address for a container's resolv.conf on this network ("" if none)."""
        rec = self.network(network)
        return rec.gateway(4) if rec.dns else ""

    def restore(self) -> None:
        """After an engine restart: bridges, sysctls, the nftables table and the DNS server again;
        attachments whose netns is gone are dropped (their addresses and ports released)."""
        with self._locked() as st:
            for rec in st.networks.values():
                if not self.kernel.link_exists(rec.bridge):
                    bridge.create(self.kernel, rec.bridge, rec.mtu, list(rec.subnets), adopt=True)
            dead = [a for a in st.attachments if not os.path.exists(a.netns_path)]
            for a in dead:
                self.kernel.link_delete(a.host_veth)
                st.attachments.remove(a)
            ips = {a.ipv4 for a in st.attachments} | {a.ipv6 for a in st.attachments}
            st.ports = [p for p in st.ports if p.container_ip in ips]
            self._apply_rules(st, force=True)
            self._save(st)
            self._sync_dns(st)

    def with_options(self, **kw: Any) -> NetManager:
        """A copy with some constructor options changed (tests, CLI flags)."""
        new = NetManager(self.root, self.kernel, pools=self.pools, link_prefix=self.prefix,
                         table=self.table, upstreams=self._upstreams, dns_port=self.dns_port,
                         run_dns=self.run_dns)
        for k, v in kw.items():
            setattr(new, k, v)
        return new


def _free_ifname(used: list[str]) -> str:
    i = 0
    while f"eth{i}" in used:
        i += 1
    return f"eth{i}"


def _atomic_write(path: Path, text: str, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)



