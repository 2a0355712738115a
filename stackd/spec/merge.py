"""Merge positioned trees with compose-go's override rules (`-f a -f b`, extends, include).

Mappings merge recursively, scalars are replaced, sequences are appended; the tables below,
keyed by path patterns, name the exceptions (convert to a list and append, replace, merge by
key) and the sequences whose items are unique by a key (ports, volumes, secrets...), where a
later item replaces an earlier one with the same key. `!reset` removes a value, `!override`
replaces it without merging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stackd.errors import SpecError
from stackd.spec.source import Node, Override, Path, Reset, Seq, format_path

Merger = Callable[[Any, Any, Path], Any]


def strip_tags(value: Any) -> Any:
    """The value with `!override` unwrapped and `!reset` entries dropped (positions kept)."""
    if isinstance(value, Override):
        return strip_tags(value.value)
    if isinstance(value, Reset):
        return None
    if isinstance(value, Node):
        if not any(isinstance(v, (Reset, Override, Node, Seq)) for v in value.values()):
            return value
        out = value.copy_node()
        for key, child in value.items():
            if isinstance(child, Reset):
                del out[key]
            else:
                out[key] = strip_tags(child)
        return out
    if isinstance(value, Seq):
        if not any(isinstance(v, (Reset, Override, Node, Seq)) for v in value):
            return value
        seq = Seq(pos=value.pos)
        for i, child in enumerate(value):
            if not isinstance(child, Reset):
                seq.add(strip_tags(child), value.position_of(i))
        return seq
    return value


def _to_seq(value: Any) -> Seq:
    """A mapping `{K: V}` as `["K=V"]` (sorted, `K` alone for null), a string as `[s]`."""
    if isinstance(value, Seq):
        return value
    if isinstance(value, dict):
        pos = getattr(value, "pos", None)
        seq = Seq(pos=pos)
        node = value if isinstance(value, Node) else Node(value)
        for key in sorted(value):
            v = value[key]
            p = node.position_of(key)
            if v is None:
                seq.add(key, p)
            elif isinstance(v, list):
                for item in v:
                    seq.add(f"{key}={_text(item)}", p)
            else:
                seq.add(f"{key}={_text(v)}", p)
        return seq
    if value is None:
        return Seq()
    return Seq([value])


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _to_map(value: Any, default: dict[str, Any] | None) -> Node:
    if isinstance(value, Node):
        return value
    node = Node(pos=getattr(value, "pos", None))
    if isinstance(value, Seq):
        for i, item in enumerate(value):
            node.set(str(item), Node(default, pos=value.position_of(i)) if default else None, value.position_of(i))
    return node


def _append(base: Any, over: Any, path: Path) -> Seq:
    reset: set[str] = set()
    if isinstance(over, dict) and any(isinstance(v, Reset) for v in over.values()):
        # `KEY: !reset null` in a mapping form drops what earlier files set for KEY
        reset = {k for k, v in over.items() if isinstance(v, Reset)}
        over = strip_tags(over)
    left, right = _to_seq(base), _to_seq(over)
    out = Seq(pos=right.pos or left.pos)
    for i, item in enumerate(left):
        if reset and isinstance(item, str) and item.split("=", 1)[0] in reset:
            continue
        out.add(item, left.position_of(i))
    for i, item in enumerate(right):
        out.add(strip_tags(item), right.position_of(i))
    return out


def _append_unique(base: Any, over: Any, path: Path) -> Seq:
    left, right = _to_seq(base), _to_seq(over)
    out = Seq(pos=right.pos or left.pos)
    for i, item in enumerate(left):
        out.add(item, left.position_of(i))
    for i, item in enumerate(right):
        if item not in left:
            out.add(strip_tags(item), right.position_of(i))
    return out


def _replace(base: Any, over: Any, path: Path) -> Any:
    return strip_tags(over)


def _build(base: Any, over: Any, path: Path) -> Any:
    def as_map(v: Any) -> Any:
        if isinstance(v, str):
            node = Node(pos=None)
            node.set("context", v)
            return node
        return v

    return _merge_maps(as_map(base), as_map(over), path)


def _depends_on(base: Any, over: Any, path: Path) -> Any:
    default = {"condition": "service_started", "required": True}
    return _merge_maps(_to_map(base, default), _to_map(over, default), path)


def _networks(base: Any, over: Any, path: Path) -> Any:
    return _merge_maps(_to_map(base, None), _to_map(over, None), path)


def _logging(base: Any, over: Any, path: Path) -> Any:
    if (
        isinstance(base, dict) and isinstance(over, dict) and "driver" in base and "driver" in over
        and base["driver"] != over["driver"]
    ):
        return strip_tags(over)
    return merge(base, over, path, _special=False)


def _ipam_config(base: Any, over: Any, path: Path) -> Any:
    if not isinstance(base, Seq) or not isinstance(over, Seq):
        return strip_tags(over)
    out = Seq(pos=over.pos)
    index: dict[Any, int] = {}
    for seq in (base, over):
        for i, item in enumerate(seq):
            subnet = item.get("subnet") if isinstance(item, dict) else None
            if subnet is not None and subnet in index:
                j = index[subnet]
                out[j] = merge(out[j], item, path)
                out.item_pos[j] = seq.position_of(i)
            else:
                if subnet is not None:
                    index[subnet] = len(out)
                out.add(strip_tags(item), seq.position_of(i))
    return out


_MERGERS: dict[Path, Merger] = {}
for _p in (
    "networks.*.labels", "volumes.*.labels", "services.*.annotations", "services.*.build.args",
    "services.*.build.additional_contexts", "services.*.build.labels", "services.*.deploy.labels",
    "services.*.dns", "services.*.dns_opt", "services.*.dns_search", "services.*.env_file",
    "services.*.label_file", "services.*.environment", "services.*.labels",
    "services.*.volumes.*.volume.labels", "services.*.sysctls", "services.*.tmpfs",
):
    _MERGERS[tuple(_p.split("."))] = _append
for _p, _f in (
    ("services.*.extra_hosts", _append_unique), ("services.*.build.extra_hosts", _append_unique),
    ("services.*.command", _replace), ("services.*.entrypoint", _replace),
    ("services.*.healthcheck.test", _replace), ("services.*.ulimits.*", _replace),
    ("services.*.build", _build), ("services.*.depends_on", _depends_on),
    ("services.*.networks", _networks), ("services.*.logging", _logging),
    ("networks.*.ipam.config", _ipam_config),
):
    _MERGERS[tuple(_p.split("."))] = _f


def _match(table: dict[Path, Any], path: Path) -> Any:
    """The value of the pattern (`*` matches one key) that matches `path`, in len(path) steps."""
    trie = _TRIES.get(id(table))
    if trie is None:
        trie = _TRIES[id(table)] = _trie(table)
    return _walk(trie, path, 0)


_TRIES: dict[int, dict[Any, Any]] = {}
_END = object()


def _trie(table: dict[Path, Any]) -> dict[Any, Any]:
    root: dict[Any, Any] = {}
    for pattern, value in table.items():
        node = root
        for part in pattern:
            node = node.setdefault(part, {})
        node.setdefault(_END, value)
    return root


def _walk(node: dict[Any, Any], path: Path, i: int) -> Any:
    if i == len(path):
        return node.get(_END)
    part = path[i]
    exact = node.get(part) if isinstance(part, str) else None
    if exact is not None:
        found = _walk(exact, path, i + 1)
        if found is not None:
            return found
    wild = node.get("*")
    return _walk(wild, path, i + 1) if wild is not None else None


def _merge_maps(base: Any, over: Any, path: Path) -> Any:
    if not isinstance(base, Node) or not isinstance(over, Node):
        if over is None:
            return base
        raise SpecError(f"cannot merge {_kind(over)} into {_kind(base)}", position=getattr(over, "pos", None), path=format_path(path))
    out = base.copy_node()
    for key, value in over.items():
        kpos = over.key_pos.get(key)
        vpos = over.val_pos.get(key)
        if isinstance(value, Reset):
            out.pop(key, None)
            out.key_pos.pop(key, None)
            out.val_pos.pop(key, None)
        elif isinstance(value, Override) or key not in out:
            out.set(key, strip_tags(value), vpos, kpos)
        else:
            out.set(key, merge(out[key], value, (*path, key)), vpos or out.val_pos.get(key), out.key_pos.get(key) or kpos)
    return out


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a sequence"
    return "a scalar"


def merge(base: Any, over: Any, path: Path = (), *, _special: bool = True) -> Any:
    """`over` merged onto `base` at `path` (neither is modified)."""
    if isinstance(over, Reset):
        return None
    if isinstance(over, Override):
        return strip_tags(over.value)
    if _special:
        rule = _match(_MERGERS, path)
        if rule is not None:
            return rule(base, over, path)
    if over is None:
        return base
    if isinstance(base, Node):
        return _merge_maps(base, over, path)
    if isinstance(base, Seq):
        if not isinstance(over, Seq):
            raise SpecError(f"cannot merge {_kind(over)} into {_kind(base)}", position=getattr(over, "pos", None), path=format_path(path))
        return _append(base, over, path)
    return strip_tags(over)


def merge_files(trees: list[Any]) -> Node:
    """Several file trees merged in order, then made unique where the rules say so."""
    out: Any = Node()
    for tree in trees:
        out = merge(out, tree) if out else strip_tags(tree)
        if not isinstance(out, Node):
            out = Node()
    return enforce_unique(out)


# --- unicity: sequences whose items are unique by a key (a later item replaces an earlier one) ---

def _kv_key(item: Any) -> str:
    return str(item).split("=", 1)[0] if isinstance(item, str) else repr(item)


def _volume_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target", ""))
    parts = str(item).split(":")
    return parts[0] if len(parts) == 1 else parts[1]


def _port_key(item: Any) -> str:
    if isinstance(item, dict):
        return f"{item.get('host_ip', '')}:{item.get('published', '')}:{item.get('target')}/{item.get('protocol', 'tcp')}"
    text = str(item)
    text, _, proto = text.partition("/")
    host, sep, target = text.rpartition(":")
    ip, published = "", host
    if sep and (host.startswith("[") and "]:" in host):
        ip, published = host[1:].split("]:", 1)
    elif sep and ":" in host:
        ip, published = host.rsplit(":", 1)
    return f"{ip}:{published}:{target}/{proto or 'tcp'}"


def _mount_key(default: str) -> Callable[[Any], str]:
    def key(item: Any) -> str:
        if isinstance(item, dict):
            if "target" in item:
                return str(item["target"])
            return f"{default}/{item.get('source')}"
        return f"{default}/{item}"

    return key


def _env_file_key(item: Any) -> str:
    return str(item.get("path")) if isinstance(item, dict) else str(item)


def _device_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target"))
    parts = str(item).split(":")
    return parts[0] if len(parts) == 1 else parts[1]


_UNIQUE: dict[Path, Callable[[Any], str]] = {}
for _p in (
    "networks.*.labels", "networks.*.ipam.options", "services.*.annotations", "services.*.build.args",
    "services.*.build.additional_contexts", "services.*.build.platforms", "services.*.build.tags",
    "services.*.build.labels", "services.*.cap_add", "services.*.cap_drop", "services.*.deploy.labels",
    "services.*.dns", "services.*.dns_opt", "services.*.dns_search", "services.*.environment",
    "services.*.labels", "services.*.links", "services.*.networks.*.aliases",
    "services.*.networks.*.link_local_ips", "services.*.profiles", "services.*.sysctls",
    "services.*.tmpfs",
):
    _UNIQUE[tuple(_p.split("."))] = _kv_key
for _p, _k in (
    ("services.*.volumes", _volume_key), ("services.*.ports", _port_key),
    ("services.*.secrets", _mount_key("/run/secrets")), ("services.*.configs", _mount_key("")),
    ("services.*.env_file", _env_file_key), ("services.*.devices", _device_key),
    ("services.*.expose", str),
):
    _UNIQUE[tuple(_p.split("."))] = _k


def _unique_seq(seq: Seq, key: Callable[[Any], str]) -> Seq:
    keys: dict[str, int] = {}
    out = Seq(pos=seq.pos)
    for i, item in enumerate(seq):
        k = key(item)
        if k in keys:
            out[keys[k]] = item
            out.item_pos[keys[k]] = seq.position_of(i)
        else:
            keys[k] = len(out)
            out.add(item, seq.position_of(i))
    return out


def enforce_unique(tree: Node) -> Node:
    """Drop earlier duplicates from the keyed sequences (compose-go's EnforceUnicity)."""
    for section in ("services", "networks"):
        group = tree.get(section)
        if not isinstance(group, Node):
            continue
        for name, item in group.items():
            if isinstance(item, Node):
                _unique_in(item, (section, name))
    return tree


def _unique_in(node: Node, path: Path) -> None:
    for key, value in node.items():
        sub = (*path, key)
        if isinstance(value, Seq):
            rule = _match(_UNIQUE, sub)
            if rule is not None and len(value) > 1:
                node[key] = _unique_seq(value, rule)
        elif isinstance(value, Node) and len(sub) < 5:
            _unique_in(value, sub)
