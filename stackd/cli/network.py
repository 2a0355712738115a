"""`stackd network …`: Docker's network commands (ls, create, rm, inspect, prune, connect, disconnect).

The manager (and through it the kernel seam) is built only when a command runs; tests and a
host's second stackd set `STACKD_NET_TABLE` / `STACKD_NET_LINK_PREFIX` / `STACKD_NET_POOLS`
(`base/len:size,…`) so they never share nftables rules or link names with another state root.
The output and flag helpers shared by both live in `stackd.cli.volume`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

from stackd.cli.roots import state_root
from stackd.cli.volume import (
    NounGroup,
    emit_formatted,
    emit_inspect,
    finish,
    label_match,
    labels_text,
    parse_bool,
    parse_filters,
    parse_kv,
    rfc3339,
    table,
)
from stackd.errors import ConflictError, NotFoundError, StackdError, UsageError

if TYPE_CHECKING:
    from stackd.net.manager import NetManager, NetworkRecord

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
PREDEFINED = {"host": "host", "none": "null"}  # pseudo networks (no records), name → driver
DEFAULT = "bridge"
KNOWN_OPTS = ("com.docker.network.bridge.name", "com.docker.network.driver.mtu")


def net_manager(environ: Mapping[str, str] | None = None) -> NetManager:
    """The CLI's NetManager: the state root, the real kernel, and the env's table/prefix/pools."""
    from stackd.engine.engine import net_manager as make

    env = os.environ if environ is None else environ
    return make(state_root(dict(env)), environ=env)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _manager() -> Iterator[NetManager]:
    m = net_manager()
    try:
        yield m
    finally:
        close = getattr(m.kernel, "close", None)
        if close is not None:
            close()


def _pseudo_id(m: NetManager, name: str) -> str:
    from stackd.net.bridge import network_id

    return network_id(name, str(m.root))


def _resolve(m: NetManager, text: str) -> NetworkRecord | str:
    """A record by name, full ID or unique ID prefix; a predefined pseudo network's name."""
    nets = m.networks()
    for n in nets:
        if n.name == text:
            return n
    if text in PREDEFINED:
        return text
    hits: list[NetworkRecord | str] = []
    if re.fullmatch(r"[0-9a-f]{1,64}", text):
        hits += [n for n in nets if n.id.startswith(text)]
        hits += [p for p in PREDEFINED if _pseudo_id(m, p).startswith(text)]
    if len(hits) > 1:
        raise ConflictError(f"network {text} is ambiguous ({len(hits)} matches found based on ID prefix)")
    if not hits:
        raise NotFoundError(f"network {text} not found")
    return hits[0]


# -- listing ----------------------------------------------------------------------------------
def _rows(m: NetManager) -> list[dict[str, Any]]:
    """One dict per network (records and the pseudo ones), with what ls/inspect/filters need."""
    users: dict[str, int] = {}
    for a in m.attachments():
        users[a.network] = users.get(a.network, 0) + 1
    out = []
    for n in m.networks():
        out.append({"name": n.name, "id": n.id, "driver": n.driver, "labels": dict(n.labels),
                    "created": n.created, "internal": n.internal, "ipv6": n.enable_ipv6,
                    "builtin": n.name == DEFAULT, "users": users.get(n.name, 0)})
    for name, driver in PREDEFINED.items():
        out.append({"name": name, "id": _pseudo_id(m, name), "driver": driver, "labels": {},
                    "created": 0.0, "internal": False, "ipv6": False, "builtin": True, "users": 0})
    return sorted(out, key=lambda r: r["name"])


def _net_filter(filters: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    """Docker's `--filter`: values of one key are OR'ed, different keys AND'ed."""
    by_key = parse_filters(filters, ("name", "id", "label", "driver", "type", "dangling", "scope"))

    def one(key: str, value: str, r: dict[str, Any]) -> bool:
        if key == "name":
            return value in r["name"]
        if key == "id":
            return bool(r["id"].startswith(value))
        if key == "label":
            return label_match(r["labels"], value)
        if key == "driver":
            return bool(r["driver"] == value)
        if key == "scope":
            return value == "local"
        if key == "type":
            if value not in ("custom", "builtin"):
                raise UsageError(f"invalid filter 'type={value}' (custom or builtin)")
            return bool(r["builtin"]) == (value == "builtin")
        return (r["users"] == 0 and not r["builtin"]) == parse_bool("dangling", value)

    return lambda r: all(any(one(k, v, r) for v in vs) for k, vs in by_key.items())


@click.group("network", cls=NounGroup, context_settings={"help_option_names": ["-h", "--help"]})
def network() -> None:
    """Manage networks."""


@network.command("ls")
@click.option("--format", "fmt", default=None, help="Output format: json or a Go-like template.")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter (name=, id=, label=, driver=, type=, dangling=).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
def ls_cmd(fmt: str | None, quiet: bool, filters: tuple[str, ...], no_trunc: bool) -> None:
    """List networks."""
    keep = _net_filter(filters)
    with _manager() as m:
        rows = [r for r in _rows(m) if keep(r)]
    ids = [r["id"] if no_trunc else r["id"][:12] for r in rows]
    if quiet:
        for i in ids:
            click.echo(i)
        return
    objs = [{"CreatedAt": rfc3339(r["created"]), "Driver": r["driver"], "ID": i,
             "IPv4": str(r["driver"] == "bridge").lower(), "IPv6": str(r["ipv6"]).lower(),
             "Internal": str(r["internal"]).lower(), "Labels": labels_text(r["labels"]),
             "Name": r["name"], "Scope": "local"} for r, i in zip(rows, ids, strict=True)]
    if fmt:
        emit_formatted(fmt, objs)
        return
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
          [[o["ID"], o["Name"], o["Driver"], o["Scope"]] for o in objs])


# -- create -----------------------------------------------------------------------------------
def _ipam(subnets: tuple[str, ...], gateways: tuple[str, ...], ranges: tuple[str, ...],
          aux: tuple[str, ...]) -> list[Any]:
    """Docker's flag pairing: every gateway, ip-range and aux address belongs to one subnet."""
    import ipaddress

    from stackd.net.manager import IpamConfig

    nets = []
    for s in subnets:
        try:
            nets.append(ipaddress.ip_network(s))
        except ValueError:
            try:
                fixed = ipaddress.ip_network(s, strict=False)
            except ValueError:
                raise UsageError(f"invalid subnet {s!r}") from None
            raise UsageError(f"invalid subnet {s}: it should be {fixed}") from None
    if len({str(n) for n in nets}) != len(nets):
        raise UsageError("each --subnet may be given only once")
    for a in nets:
        for b in nets:
            if a is not b and a.version == b.version and a.overlaps(b):
                raise UsageError(f"subnets {a} and {b} overlap")

    def owner(flag: str, text: str) -> int:
        try:
            if flag == "--ip-range":
                rng = ipaddress.ip_network(text)
                hits = [i for i, n in enumerate(nets) if n.version == rng.version
                        and rng.network_address in n and rng.broadcast_address in n]
            else:
                addr = ipaddress.ip_address(text)
                hits = [i for i, n in enumerate(nets) if addr in n]
        except ValueError:
            raise UsageError(f"invalid {flag} {text!r}") from None
        if not hits:
            raise UsageError(f"no matching subnet for {flag} {text}")
        return hits[0]

    gw: dict[int, str] = {}
    rng: dict[int, str] = {}
    aux_by: dict[int, dict[str, str]] = {}
    for g in gateways:
        i = owner("--gateway", g)
        if i in gw:
            raise UsageError(f"cannot have multiple gateways for subnet {nets[i]}")
        gw[i] = g
    for r in ranges:
        i = owner("--ip-range", r)
        if i in rng:
            raise UsageError(f"cannot have multiple ip-ranges for subnet {nets[i]}")
        rng[i] = r
    for k, v in parse_kv(aux, "--aux-address", need_value=True).items():
        aux_by.setdefault(owner("--aux-address", v), {})[k] = v
    return [IpamConfig(str(n), gw.get(i, ""), rng.get(i, ""), aux_by.get(i, {})) for i, n in enumerate(nets)]


@network.command("create")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Driver (bridge).")
@click.option("--subnet", "subnets", multiple=True, help="Subnet in CIDR form (repeatable: one per family).")
@click.option("--gateway", "gateways", multiple=True, help="Gateway of a subnet.")
@click.option("--ip-range", "ranges", multiple=True, help="Allocate container addresses from this sub-range.")
@click.option("--aux-address", "aux", multiple=True, help="Reserved address: name=ip.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--ipv6", is_flag=True, help="Enable IPv6 (a ULA subnet unless --subnet gives one).")
@click.option("-o", "--opt", "opts", multiple=True, help="Driver option k=v (bridge name, MTU).")
@click.option("-l", "--label", "labels", multiple=True, help="Label k=v.")
@click.option("--attachable", is_flag=True, help="Allow manual container attachment.")
@click.argument("name")
def create_cmd(driver: str, subnets: tuple[str, ...], gateways: tuple[str, ...], ranges: tuple[str, ...],
               aux: tuple[str, ...], internal: bool, ipv6: bool, opts: tuple[str, ...],
               labels: tuple[str, ...], attachable: bool, name: str) -> None:
    """Create a network."""
    from stackd.net.manager import NetworkSpec

    if not NAME_RE.match(name):
        raise UsageError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if name in PREDEFINED or name == DEFAULT:
        raise ConflictError(f"{name} is a pre-defined network and cannot be created")
    if driver != "bridge":
        raise UsageError(f"network {name}: driver {driver!r} is not supported (only bridge)")
    options = parse_kv(opts, "--opt")
    mtu = options.get(KNOWN_OPTS[1], "")
    if mtu and not mtu.isdigit():
        raise UsageError(f"invalid MTU {mtu!r} in --opt {KNOWN_OPTS[1]}")
    for k in options:
        if k not in KNOWN_OPTS:
            click.echo(f"warning: network option {k} is not supported and is ignored", err=True)
    spec = NetworkSpec(name, driver, internal, tuple(_ipam(subnets, gateways, ranges, aux)), ipv6,
                       parse_kv(labels, "--label"), options, attachable)
    with _manager() as m:
        rec = m.create_network(spec)
    click.echo(rec.id)


# -- rm / inspect / prune ---------------------------------------------------------------------
def _in_use(m: NetManager, rec: NetworkRecord) -> None:
    names = sorted({(a.names[0] if a.names else a.container_id[:12]) for a in m.attachments()
                    if a.network == rec.name})
    if names:
        raise ConflictError(
            f"network {rec.name} is in use by {len(names)} container(s) ({', '.join(names)}): "
            "disconnect or remove them first")


@network.command("rm")
@click.option("-f", "--force", is_flag=True, help="Do not error if the network does not exist.")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: tuple[str, ...], force: bool) -> None:
    """Remove one or more networks."""
    errors: list[StackdError] = []
    with _manager() as m:
        for text in names:
            try:
                rec = _resolve(m, text)
                if isinstance(rec, str) or rec.name == DEFAULT:
                    raise ConflictError(f"{text} is a pre-defined network and cannot be removed")
                _in_use(m, rec)
                m.remove_network(rec.name)
                click.echo(text)
            except NotFoundError as exc:
                if not force:
                    errors.append(exc)
            except StackdError as exc:
                errors.append(exc)
    finish(errors)


def _inspect(m: NetManager, rec: NetworkRecord | str) -> dict[str, Any]:
    if isinstance(rec, str):
        return {"Name": rec, "Id": _pseudo_id(m, rec), "Created": rfc3339(0.0), "Scope": "local",
                "Driver": PREDEFINED[rec], "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None, "Config": None}, "Internal": False,
                "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": {}, "Options": {}, "Labels": {}}
    import hashlib

    config = []
    for s in rec.subnets:
        c: dict[str, Any] = {"Subnet": s.subnet, "Gateway": s.gateway}
        if s.ip_range:
            c["IPRange"] = s.ip_range
        if s.aux:
            c["AuxiliaryAddresses"] = dict(s.aux)
        config.append(c)
    containers = {}
    for a in m.attachments():
        if a.network == rec.name:
            containers[a.container_id] = {
                "Name": a.names[0] if a.names else a.container_id[:12],
                "EndpointID": hashlib.sha256(f"{a.container_id}/{rec.id}".encode()).hexdigest(),
                "MacAddress": a.mac,
                "IPv4Address": f"{a.ipv4}/{a.prefix4}" if a.ipv4 else "",
                "IPv6Address": f"{a.ipv6}/{a.prefix6}" if a.ipv6 else ""}
    return {"Name": rec.name, "Id": rec.id, "Created": rfc3339(rec.created), "Scope": "local",
            "Driver": rec.driver, "EnableIPv6": rec.enable_ipv6,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config}, "Internal": rec.internal,
            "Attachable": rec.attachable, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": containers, "Options": dict(rec.options),
            "Labels": dict(rec.labels), "Bridge": rec.bridge, "MTU": rec.mtu, "DNS": rec.dns}


@network.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Format: json (one line each) or a template.")
@click.argument("names", nargs=-1, required=True)
def inspect_cmd(names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more networks."""
    out: list[dict[str, Any]] = []
    errors: list[StackdError] = []
    with _manager() as m:
        for text in names:
            try:
                out.append(_inspect(m, _resolve(m, text)))
            except StackdError as exc:
                errors.append(exc)
    emit_inspect(out, fmt, errors)


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="Filter (label=, label!=).")
def prune_cmd(force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks (never the default `bridge`)."""
    by_key = parse_filters(filters, ("label", "label!"))
    if not force:
        click.confirm("WARNING! This will remove all custom networks not used by at least one container.\n"
                      "Are you sure you want to continue?", abort=True)
    gone = []
    with _manager() as m:
        used = {a.network for a in m.attachments()}
        for rec in m.networks():
            if rec.name == DEFAULT or rec.name in used:
                continue
            if not all(label_match(rec.labels, v) for v in by_key.get("label", [])):
                continue
            if any(label_match(rec.labels, v) for v in by_key.get("label!", [])):
                continue
            try:
                m.remove_network(rec.name)
            except ConflictError:
                continue  # a container joined it meanwhile
            gone.append(rec.name)
    if gone:
        click.echo("Deleted Networks:")
        for n in gone:
            click.echo(n)


# -- connect / disconnect (through the container manager: the config records the attachment) ---
def _engine() -> Any:
    from stackd.cli.roots import run_root
    from stackd.engine.engine import Engine

    return Engine(state_root(), run_root(), restore=False)


@network.command("connect")
@click.option("--alias", "aliases", multiple=True, help="Network-scoped alias for the container.")
@click.option("--ip", default="", help="IPv4 address (e.g. 172.30.100.104).")
@click.option("--ip6", default="", help="IPv6 address.")
@click.argument("name")
@click.argument("container")
def connect_cmd(aliases: tuple[str, ...], ip: str, ip6: str, name: str, container: str) -> None:
    """Connect a container to a network (a stopped one joins it when it starts)."""
    from stackd.engine.containers_net import connect

    eng = _engine()
    try:
        rec = _resolve(eng.networks, name)
        if isinstance(rec, str):
            raise ConflictError(f"container {container} cannot be connected to the {rec} network")
        if not (state_root() / "stackd.db").exists():
            raise NotFoundError(f"no such container: {container}")
        connect(eng.containers, container, rec.name, aliases=aliases, ipv4=ip, ipv6=ip6)
    finally:
        eng.close()


@network.command("disconnect")
@click.option("-f", "--force", is_flag=True, help="Also for a container whose record is gone.")
@click.argument("name")
@click.argument("container")
def disconnect_cmd(force: bool, name: str, container: str) -> None:
    """Disconnect a container from a network."""
    from stackd.engine.containers_net import disconnect

    eng = _engine()
    try:
        m = eng.networks
        rec = _resolve(m, name)
        net_name = rec if isinstance(rec, str) else rec.name
        try:
            if not (state_root() / "stackd.db").exists():
                raise NotFoundError(f"no such container: {container}")
            disconnect(eng.containers, container, net_name)
            return
        except NotFoundError:
            if not force:
                raise
        # -f: the endpoint by container ID (prefix) or name, as the network records it
        hits = {a.container_id for a in m.attachments() if a.network == net_name
                and (a.container_id.startswith(container) or container in a.names[:1])}
        if len(hits) != 1:
            raise NotFoundError(f"container {container} is not connected to network {net_name}")
        m.detach(hits.pop(), net_name)
    finally:
        eng.close()
