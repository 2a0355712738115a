"""A container's network: its persistent netns, network attachments, published ports, hosts and resolv.conf.

Every container not in `host` or `container:<id>` mode gets a network namespace of its own,
bind-mounted at `<run_root>/netns/<id>` when it is created (loopback up), so it outlives the
container's processes: the runtime joins it by path, `container:<id>` containers join the same
file, and attachments survive restarts. Networks are attached in priority order at create
(addresses are known for /etc/hosts); ports are published at start and unpublished when the
container stops, so a stopped container holds no host port. `none` is a netns without networks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackd.engine.container_config import ContainerConfig, NetworkAttachmentConfig
from stackd.errors import ConflictError, EngineError, NotFoundError, UsageError

if TYPE_CHECKING:
    from stackd.engine.containers import ContainerManager
    from stackd.engine.containers_store import ContainerRecord

DEFAULT_NETWORK = "bridge"
_MODES = ("none", "host")


def netns_path(mgr: ContainerManager, cid: str) -> Path:
    return mgr.run_root / "netns" / cid


def _is_netns(path: Path) -> bool:
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def create_netns(path: Path) -> None:
    """A new network namespace bind-mounted on `path`, loopback up (in-process: no fork, no exec)."""
    from stackd.net import linux_ns

    path.parent.mkdir(parents=True, exist_ok=True)
    linux_ns.create_netns(str(path))


def delete_netns(path: Path) -> None:
    """Unmount and remove the netns file (the kernel deletes its links with the namespace)."""
    from stackd.net import linux_ns

    linux_ns.delete_netns(str(path))


def owner_of(mgr: ContainerManager, mode: str) -> str:
    return mode.split(":", 1)[1] if mode.startswith("container:") else ""


def _net_state_mentions(mgr: ContainerManager, cid: str) -> bool:
    """Whether the network records know the container (without building the manager)."""
    try:
        raw = json.loads((mgr.state_root / "net" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return any(a["container_id"] == cid for a in raw.get("attachments", ())) or any(
        p["container_id"] == cid for p in raw.get("ports", ()))


# --- create: validate and normalise ------------------------------------------------------------

def prepare(mgr: ContainerManager, cfg: ContainerConfig) -> ContainerConfig:
    """Resolve the network mode and networks, check networks exist and ports are free.

    Nothing is created except the default `bridge` network when it is needed."""
    mode = cfg.network_mode
    if mode.startswith("service:"):
        raise UsageError(f"container {cfg.name}: network mode {mode} must be resolved to container:<id>")
    if mode.startswith("container:"):
        other = mgr.store.resolve(owner_of(mgr, mode))
        while other.config.network_mode.startswith("container:"):
            other = mgr.store.get(owner_of(mgr, other.config.network_mode))
        if other.config.network_mode == "host":
            return dataclasses.replace(cfg, network_mode="host", networks=(), ports=())
        if cfg.networks or cfg.ports:
            raise ConflictError(f"container {cfg.name}: networks and published ports conflict with "
                                f"network mode {mode} (they belong to the other container)")
        return dataclasses.replace(cfg, network_mode=f"container:{other.id}")
    if mode in _MODES:
        if cfg.networks:
            raise ConflictError(f"container {cfg.name}: network mode {mode} cannot be combined with networks")
        return dataclasses.replace(cfg, ports=())  # Docker ignores published ports here
    networks = cfg.networks
    if mode not in ("", "default", DEFAULT_NETWORK):  # a network's name as the mode
        networks = (NetworkAttachmentConfig(mode), *(n for n in networks if n.network != mode))
    elif not networks:
        networks = (NetworkAttachmentConfig(DEFAULT_NETWORK),)
    net = mgr.net
    if net is None:
        raise EngineError(f"container {cfg.name}: networking is not configured for this engine")
    for n in networks:
        if n.network == DEFAULT_NETWORK:
            net.ensure_default()
            if n.aliases:
                raise UsageError("network-scoped aliases are only supported for user-defined networks")
        else:
            net.network(n.network)  # NotFoundError: network X not found
    if len({n.network for n in networks}) != len(networks):
        raise UsageError(f"container {cfg.name}: a network is listed twice")
    cfg = dataclasses.replace(cfg, network_mode="", networks=tuple(networks))
    check_ports(mgr, cfg)
    return cfg


def check_ports(mgr: ContainerManager, cfg: ContainerConfig, cid: str = "") -> None:
    """Refuse ports published by another running container or in use on the host (before creating)."""
    if not cfg.ports:
        return
    from stackd.engine import containers_state as st
    from stackd.net import ports

    specs = ports.parse(cfg.ports)
    for b in mgr.net.published():
        if b.container_id == cid:
            continue
        try:
            owner = mgr.sync(mgr.store.get(b.container_id))
            live = owner.status in st.LIVE
        except NotFoundError:
            live = False
        if not live:  # left by a stopped or vanished container: it no longer holds the port
            mgr.net.unpublish(b.container_id)
    taken = [b.key() for b in mgr.net.published() if b.container_id != cid]
    for s in specs:
        if not s.host_port:
            continue
        key = (s.host_ip or "0.0.0.0", s.host_port, s.protocol)
        if any(ports._overlap(key, t) for t in taken):
            raise ConflictError(f"cannot publish {key[0]}:{s.host_port}/{s.protocol}: the port is "
                                "already published by another stackd container")
        ports.probe(s.host_ip, s.host_port, s.protocol)
        taken.append(key)


# --- create/start: the netns, attachments, /etc files -------------------------------------------

def names_of(rec: ContainerRecord) -> list[str]:
    cfg = rec.config
    service = cfg.labels.get("io.stackd.service") or cfg.labels.get("com.docker.compose.service")
    return list(dict.fromkeys([rec.name, cfg.hostname or rec.id[:12], rec.id[:12],
                               *([service] if service else [])]))


def setup(mgr: ContainerManager, rec: ContainerRecord) -> None:
    """Make the netns and attach every configured network that is not attached yet (idempotent)."""
    cfg = rec.config
    if cfg.network_mode == "host" or cfg.network_mode.startswith("container:"):
        return
    path = netns_path(mgr, rec.id)
    fresh = not _is_netns(path)
    if fresh:
        if _net_state_mentions(mgr, rec.id):
            mgr.net.detach(rec.id)  # attachments of a netns that is gone (reboot)
        create_netns(path)
    if cfg.network_mode == "none":
        if fresh:
            write_etc(mgr, rec, [])
        return
    net = mgr.net
    have = {a.network for a in net.attachments(rec.id)}
    todo = [n for n in sorted(cfg.networks, key=lambda n: -n.priority) if n.network not in have]
    for n in todo:
        if n.network == DEFAULT_NETWORK:
            net.ensure_default()
        net.attach(rec.id, str(path), n.network, aliases=n.aliases, names=names_of(rec),
                   ipv4=n.ipv4_address, ipv6=n.ipv6_address, mac=n.mac_address, priority=n.priority)
    if todo or fresh:
        write_etc(mgr, rec, net.attachments(rec.id))


def _dns_server(mgr: ContainerManager, atts: list[Any]) -> str:
    for a in sorted(atts, key=lambda a: (-a.priority, not a.gateway)):
        try:
            server = mgr.net.dns_server_for(a.network)
        except NotFoundError:
            continue
        if server:
            return str(server)
    return ""


def write_etc(mgr: ContainerManager, rec: ContainerRecord, atts: list[Any]) -> None:
    """/etc/hosts and /etc/resolv.conf of the container (rewritten in place: they are bind-mounted)."""
    from stackd.net import resolvconf

    cfg = rec.config
    sdir = mgr.state_dir(rec.id)
    sdir.mkdir(parents=True, exist_ok=True)
    gw = next((a for a in atts if a.gateway), atts[0] if atts else None)
    host_gw = mgr.net.network(gw.network).gateway(4) if gw is not None else ""
    own = [ip for a in atts for ip in (a.ipv4, a.ipv6) if ip]
    hosts = resolvconf.hosts_file(resolvconf.HostsOptions(
        hostname=cfg.hostname or rec.id[:12], domainname=cfg.domainname, own=own[:1] if own else [],
        extra_hosts=resolvconf.parse_extra_hosts(cfg.extra_hosts), host_gateway=host_gw))
    resolv = resolvconf.resolv_conf(
        resolvconf.read_host_resolv(),
        resolvconf.ResolvOptions(cfg.dns, cfg.dns_search, cfg.dns_opt),
        embedded_dns=_dns_server(mgr, atts))
    for name, text in (("hosts", hosts), ("resolv.conf", resolv)):
        with open(sdir / name, "w") as f:
            f.write(text)
        os.chmod(sdir / name, 0o644)


def bundle_config(mgr: ContainerManager, rec: ContainerRecord, cfg: ContainerConfig) -> ContainerConfig:
    """What `bundle.write_bundle` gets: the netns by path and the /etc files made here."""
    mode = cfg.network_mode
    if mode == "host":
        return cfg
    cid = owner_of(mgr, mode) or rec.id
    path = netns_path(mgr, cid)
    if cid != rec.id and not _is_netns(path):
        raise ConflictError(f"container {rec.name}: network mode {mode}: the other container's network "
                            "namespace is gone (start that container first)")
    sdir = mgr.state_dir(cid)
    addrs: tuple[str, ...] = ()
    if cid == rec.id and mode != "none" and mgr.net is not None:
        addrs = tuple(a.ipv4 for a in mgr.net.attachments(cid) if a.ipv4)
    if cid != rec.id:  # as Docker: a container in another's network has that one's hostname (and hosts file)
        owner = mgr.store.get(cid)
        cfg = dataclasses.replace(cfg, hostname=owner.config.hostname or cid[:12],
                                  domainname=owner.config.domainname)
    return dataclasses.replace(cfg, network_mode="", netns_path=str(path), addresses=addrs,
                               hosts_file=str(sdir / "hosts"), resolv_conf_file=str(sdir / "resolv.conf"))


def dns_ready(mgr: ContainerManager, rec: ContainerRecord) -> None:
    """Before the container runs: the DNS server has every name attached so far (see
    NetManager.flush_dns; outside a batch each attach told it already)."""
    mode = rec.config.network_mode
    if mode in ("host", "none") or mode.startswith("container:"):
        return
    flush = getattr(mgr.net, "flush_dns", None)
    if flush is not None:
        flush()


# --- start/stop/remove ---------------------------------------------------------------------------

def publish(mgr: ContainerManager, rec: ContainerRecord) -> None:
    cfg = rec.config
    if not cfg.ports or cfg.network_mode:
        return
    if mgr.net.published(rec.id):
        return
    check_ports(mgr, cfg, rec.id)
    mgr.net.publish(rec.id, cfg.ports)


def unpublish(mgr: ContainerManager, cid: str) -> None:
    if _net_state_mentions(mgr, cid) and mgr.net is not None and mgr.net.published(cid):
        mgr.net.unpublish(cid)


def teardown(mgr: ContainerManager, cid: str) -> None:
    """Delete the netns, then detach from every network (ports go too); idempotent.

    The netns goes first: the kernel then removes the container's veth pairs with it in one
    batched cleanup, instead of one slow `link del` (an RCU grace period) per pair."""
    path = netns_path(mgr, cid)
    if path.exists() or os.path.lexists(path):
        delete_netns(path)
    if _net_state_mentions(mgr, cid) and mgr.net is not None:
        mgr.net.detach(cid, netns_gone=True)


def orphans(mgr: ContainerManager) -> list[str]:
    """Attachments and netns files of containers without a record (after a crash); cleaned."""
    out = []
    try:
        raw = json.loads((mgr.state_root / "net" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        raw = {}
    known = {a["container_id"] for a in raw.get("attachments", ())} | {
        p["container_id"] for p in raw.get("ports", ())}
    d = mgr.run_root / "netns"
    files = set(os.listdir(d)) if d.is_dir() else set()
    ids = mgr.store.ids()  # read after listing: a new container is recorded before its netns
    for cid in (known | files) - ids:
        with mgr.lock(cid, blocking=False) as got:
            if got and cid not in mgr.store.ids():
                teardown(mgr, cid)
                out.append(f"network of {cid[:12]}")
        try:
            os.unlink(mgr.run_root / "locks" / cid)
        except OSError:
            pass
    return out


def restore_networks(mgr: ContainerManager) -> bool:
    """NetManager.restore() when the kernel lost what the records say (a reboot, a dead DNS server)."""
    try:
        raw = json.loads((mgr.state_root / "net" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    nets = raw.get("networks", ())
    need = any(not os.path.exists(f"/sys/class/net/{n['bridge']}") for n in nets)
    dns_nets = {n["name"] for n in nets if n.get("dns")}
    if not need and any(a["network"] in dns_nets for a in raw.get("attachments", ())):
        need = not _dns_alive(mgr.state_root)
    if not need:
        need = any(not os.path.exists(a["netns_path"]) for a in raw.get("attachments", ()))
    if need and mgr.net is not None:
        mgr.net.restore()
    return need


def _dns_alive(state_root: Path) -> bool:
    try:
        pid = int((state_root / "net" / "dns.pid").read_text().strip())
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie is not serving
    except (OSError, ValueError, IndexError):
        return False


# --- network connect / disconnect ---------------------------------------------------------------

def connect(mgr: ContainerManager, text: str, network: str, *, aliases: tuple[str, ...] = (),
            ipv4: str = "", ipv6: str = "") -> None:
    """Attach a container to one more network and record it in its config (a restart reattaches)."""
    from stackd.engine.containers_store import config_to_json

    rec = mgr.store.resolve(text)
    with mgr.lock(rec.id):
        rec = mgr.store.get(rec.id)
        cfg = rec.config
        if cfg.network_mode:
            raise ConflictError(f"container {rec.name} uses network mode {cfg.network_mode!r} and "
                                "cannot be connected to networks")
        mine = mgr.net.attachments(rec.id)
        if any(n.network == network for n in cfg.networks) or any(a.network == network for a in mine):
            raise ConflictError(f"container {rec.name} is already attached to network {network}")
        mgr.net.network(network)
        att = NetworkAttachmentConfig(network, tuple(aliases), ipv4, ipv6)
        new = dataclasses.replace(cfg, networks=(*cfg.networks, att))
        path = Path(mine[0].netns_path) if mine else netns_path(mgr, rec.id)
        if _is_netns(path):
            mgr.net.attach(rec.id, str(path), network, aliases=aliases, names=names_of(rec),
                           ipv4=ipv4, ipv6=ipv6)
        mgr.store.update(rec.id, config=config_to_json(new))
        if _is_netns(netns_path(mgr, rec.id)):
            write_etc(mgr, mgr.store.get(rec.id), mgr.net.attachments(rec.id))


def disconnect(mgr: ContainerManager, text: str, network: str) -> None:
    from stackd.engine.containers_store import config_to_json

    rec = mgr.store.resolve(text)
    with mgr.lock(rec.id):
        rec = mgr.store.get(rec.id)
        cfg = rec.config
        if not any(n.network == network for n in cfg.networks) and not any(
                a.network == network for a in mgr.net.attachments(rec.id)):
            raise NotFoundError(f"container {rec.name} is not attached to network {network}")
        if any(a.network == network for a in mgr.net.attachments(rec.id)):
            mgr.net.detach(rec.id, network)
        new = dataclasses.replace(cfg, networks=tuple(n for n in cfg.networks if n.network != network))
        mgr.store.update(rec.id, config=config_to_json(new))
        if _is_netns(netns_path(mgr, rec.id)):
            write_etc(mgr, mgr.store.get(rec.id), mgr.net.attachments(rec.id))
