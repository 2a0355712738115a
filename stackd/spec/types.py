"""Named value types of the Compose format: durations, byte sizes, KEY=VALUE lists, ports, volumes.

Each parser takes the raw YAML value and returns the canonical value or raises `ValueError` with
a message meant for the user (the caller adds file:line:col and the key path).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

# --- durations -------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """`1m30s`, `1h`, `500ms`, `1.5s` or a bare number (seconds) → seconds as a float."""
    if isinstance(value, bool):
        raise ValueError(f'"{value}" is not a duration (examples: 10s, 1m30s, 500ms)')
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value} is negative; a duration must be 0 or more")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration must be a string such as 10s, 1m30s or 500ms")
    return _duration_text(value)


@lru_cache(maxsize=1024)
def _duration_text(value: str) -> float:
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f'"{value}" is not a duration (examples: 10s, 1m30s, 500ms)')
    return total


def format_duration(seconds: float) -> str:
    """Seconds → Go's time.Duration text, as compose prints it: `1m0s`, `10s`, `500ms`, `1h0m0s`."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim(ns / size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = _trim(rest / 1e9) + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _trim(number: float) -> str:
    text = f"{number:.9f}".rstrip("0").rstrip(".")
    return text or "0"


# --- byte sizes ------------------------------------------------------------------------------

_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)", re.IGNORECASE)
_UNIT_BYTES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def parse_bytes(value: Any) -> int:
    """`512m`, `1g`, `1.5gb`, `1024`, `20M` → bytes (binary units, as Docker's RAMInBytes)."""
    if isinstance(value, bool):
        raise ValueError(f'"{value}" is not a size (examples: 512m, 1g, 1024)')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a size must be 0 or more")
        return value
    if isinstance(value, float):
        if value < 0:
            raise ValueError(f"{value} is negative; a size must be 0 or more")
        return int(value)
    if not isinstance(value, str):
        raise ValueError("a size must be a number of bytes or a string such as 512m or 1g")
    match = _BYTES.fullmatch(value.strip())
    if not match:
        raise ValueError(f'"{value}" is not a size (examples: 512m, 1g, 1024)')
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2).lower()])


# --- KEY=VALUE lists and mappings ------------------------------------------------------------

def parse_byte_limit(value: Any) -> int:
    """A byte size where -1 means unlimited (memory limits)."""
    if value in (-1, "-1"):
        return -1
    return parse_bytes(value)


def scalar_text(value: Any) -> str | None:
    """A mapping value as compose keeps it: text, or None for an unset (null) value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value)) if "e" not in repr(value) else repr(value)
    return str(value)


def split_key_value(item: str, sep: str = "=") -> tuple[str, str | None]:
    """`KEY=VALUE` → (KEY, VALUE); a bare `KEY` → (KEY, None)."""
    key, found, value = item.partition(sep)
    return (key, value) if found else (key, None)


def key_value_mapping(value: Any, *, sep: str = "=") -> dict[str, str | None]:
    """The list form (`["A=1", "B"]`) or the mapping form (`{A: 1, B: null}`) → one mapping."""
    if isinstance(value, Mapping):
        return {str(k): scalar_text(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str | None] = {}
        for item in value:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise ValueError(f"{item!r} is not a KEY{sep}VALUE string")
            key, val = split_key_value(str(item), sep)
            out[key] = val
        return out
    raise ValueError(f"must be a mapping or a list of KEY{sep}VALUE strings, not {type_name(value)}")


def type_name(value: Any) -> str:
    """How a YAML value's type is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- ports -----------------------------------------------------------------------------------

def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo_text, dash, hi_text = text.partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
    except ValueError:
        raise ValueError(f'"{spec}": {what} port "{text}" is not a number or a range like 8000-8010') from None
    for port in (lo, hi):
        if not 0 <= port <= 65535 or (what == "container" and port == 0):
            raise ValueError(f'"{spec}": {what} port {port} is out of range 1-65535')
    if hi < lo:
        raise ValueError(f'"{spec}": {what} port range {text} ends before it starts')
    return lo, hi


def parse_port(spec: Any) -> list[dict[str, Any]]:
    """Short port syntax (`3000`, `"8000:80"`, `"127.0.0.1:5000-5010:5000-5010/udp"`,
    `"[::1]:80:80"`) → a list of long-syntax mappings (ranges expanded, as compose-go does)."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise ValueError(f"a port must be a number, a string like \"8080:80\" or a mapping, not {type_name(spec)}")
    text = str(spec).strip()
    rest, slash, proto = text.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f'"{text}": protocol "{proto}" is not tcp, udp or sctp')
    ip = ""
    if rest.startswith("["):
        ip, bracket, rest = rest[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f'"{text}" is not a port (examples: 80, "8080:80", "[::1]:8080:80")')
        rest = rest[1:]
        if ":" not in rest:
            rest = ":" + rest
    parts = rest.split(":")
    if len(parts) > 3:
        ip, parts = ":".join(parts[:-2]), parts[-2:]
    elif len(parts) == 3:
        ip, parts = parts[0], parts[1:]
    target_text = parts[-1]
    published = parts[0] if len(parts) == 2 else ""
    if not target_text:
        raise ValueError(f'"{text}" is not a port (examples: 80, "8080:80", "127.0.0.1:8080:80/udp")')
    t_lo, t_hi = _port_range(target_text, "container", text)
    base: dict[str, Any] = {"mode": "ingress"}
    if ip:
        base["host_ip"] = ip
    if not published:
        return [{**base, "target": port, "protocol": proto} for port in range(t_lo, t_hi + 1)]
    p_lo, p_hi = _port_range(published, "host", text)
    count = t_hi - t_lo
    if count == 0:
        pub = str(p_lo) if p_lo == p_hi else f"{p_lo}-{p_hi}"
        return [{**base, "target": t_lo, "published": pub, "protocol": proto}]
    if p_hi - p_lo != count:
        raise ValueError(f'"{text}": host range {published} and container range {target_text} differ in size')
    return [
        {**base, "target": t_lo + i, "published": str(p_lo + i), "protocol": proto}
        for i in range(count + 1)
    ]


# --- volumes ---------------------------------------------------------------------------------

_PROPAGATION = {"shared", "slave", "private", "rshared", "rslave", "rprivate"}
_SELINUX = {"z", "Z"}


def is_bind_source(source: str) -> bool:
    """Whether a short-syntax volume source is a host path (else it names a volume)."""
    return source.startswith(("/", ".", "~", "\\")) or bool(re.match(r"^[a-zA-Z]:[\\/]", source))


def parse_volume(spec: Any) -> dict[str, Any]:
    """Short volume syntax `[SOURCE:]TARGET[:MODE]` → the long-syntax mapping compose-go makes."""
    if not isinstance(spec, str):
        raise ValueError(f"a volume must be a string like \"data:/var/lib/data\" or a mapping, not {type_name(spec)}")
    parts = spec.split(":")
    if len(parts) > 3 or not spec or any(not p for p in parts[:2]):
        raise ValueError(f'"{spec}" is not a volume (expected [SOURCE:]TARGET[:MODE])')
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0], "volume": {}}
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    out: dict[str, Any] = {}
    bind = is_bind_source(source)
    out["type"] = "bind" if bind else "volume"
    out["source"] = source
    out["target"] = target
    sub: dict[str, Any] = {"create_host_path": True} if bind else {}
    for mode in modes:
        if mode == "ro":
            out["read_only"] = True
        elif mode == "rw":
            out["read_only"] = False
        elif mode in _SELINUX and bind:
            sub["selinux"] = mode
        elif mode in _PROPAGATION and bind:
            sub["propagation"] = mode
        elif mode == "nocopy" and not bind:
            sub["nocopy"] = True
        elif mode in ("cached", "delegated", "consistent"):
            out["consistency"] = mode
        else:
            raise ValueError(f'"{spec}": unknown volume mode "{mode}" (ro, rw, z, Z, nocopy, or a bind propagation)')
    if out.get("read_only") is False:
        del out["read_only"]
    out["bind" if bind else "volume"] = sub
    return out
