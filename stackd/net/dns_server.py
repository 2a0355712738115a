"""The stackd DNS server process: answers container names per network, forwards the rest.

One process per state root (`python -m stackd.net.dns_server STATE_ROOT`), detached from the CLI
that started it. It listens on each DNS-enabled network's gateway address (UDP and TCP port 53
by default) and answers only clients inside that network's subnets. Records come from
`<state_root>/net/dns.json` (written atomically by the manager); `reload()` asks the server over
`<state_root>/net/dns.sock` to re-read it and rebind, and waits for the answer, so a network is
served when `attach` returns. The server exits when no DNS-enabled network is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stackd.net import dns

IP_FREEBIND = 15


def net_dir(state_root: str | Path) -> Path:
    return Path(state_root) / "net"


class Table:
    """The records of one network as the server sees them."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.name: str = cfg["name"].lower()
        self.subnets = [ipaddress.ip_network(s) for s in cfg["subnets"]]
        self.records: dict[str, list[str]] = {k.lower(): v for k, v in cfg["records"].items()}
        self.ptr: dict[str, str] = {dns.reverse_name(ip): n for ip, n in cfg.get("ptr", {}).items()}
        self._rr = itertools.count()

    def allows(self, client: str) -> bool:
        ip = ipaddress.ip_address(client.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in s for s in self.subnets)

    def answer(self, q: dns.Query) -> tuple[int, list[str]] | None:
        """(rcode, answers) for names we own, None to forward upstream."""
        if q.qtype == dns.PTR:
            if q.name in self.ptr:
                return dns.NOERROR, [self.ptr[q.name]]
            return None
        name = q.name
        suffix = "." + self.name
        if name.endswith(suffix) and name[: -len(suffix)] in self.records:
            name = name[: -len(suffix)]
        ips = self.records.get(name)
        if ips is None:
            if "." not in name or name.endswith(suffix):
                return dns.NXDOMAIN, []
            return None
        want = 4 if q.qtype == dns.A else 6 if q.qtype == dns.AAAA else 0
        out = [ip for ip in ips if ipaddress.ip_address(ip).version == want]
        if len(out) > 1:  # round robin over replicas
            k = next(self._rr) % len(out)
            out = out[k:] + out[:k]
        return dns.NOERROR, out


class Server:
    def __init__(self, state_root: str, port: int | None = None) -> None:
        self.dir = net_dir(state_root)
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[tuple[str, str], socket.socket] = {}  # (ip, proto) -> socket
        self.tables: dict[str, Table] = {}  # listen ip -> table
        self.by_name: dict[str, Table] = {}
        self.clients: dict[str, list[str]] = {}  # container ip -> its DNS-enabled networks
        self.upstreams: list[tuple[str, int]] = []
        self.timeout = 2.0
        self.port = port
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.mtime = 0.0

    def load(self) -> int:
        path = self.dir / "dns.json"
        try:
            cfg = json.loads(path.read_text())
            self.mtime = path.stat().st_mtime
        except FileNotFoundError:
            cfg = {"networks": []}
        self.upstreams = [(h, int(p)) for h, p in cfg.get("upstreams", [])]
        self.timeout = float(cfg.get("timeout", 2.0))
        port = self.port or int(cfg.get("port", 53))
        tables: dict[str, Table] = {}
        for n in cfg["networks"]:
            t = Table(n)
            for ip in n["listen"]:
                tables[ip] = t
        for key in [k for k in self.listeners if k[0] not in tables]:
            s = self.listeners.pop(key)
            self.sel.unregister(s)
            s.close()
        for ip in tables:
            for proto in ("udp", "tcp"):
                if (ip, proto) not in self.listeners:
                    self._listen(ip, proto, port)
        self.tables = tables
        self.by_name = {t.name: t for t in tables.values()}
        self.clients = {ip: [n.lower() for n in nets] for ip, nets in cfg.get("clients", {}).items()}
        return len(cfg["networks"])

    def _listen(self, ip: str, proto: str, port: int) -> None:
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            s.bind((ip, port))
        except OSError as exc:
            s.close()
            print(f"dns: cannot listen on {ip}:{port}/{proto}: {exc}", file=sys.stderr, flush=True)
            return
        if proto == "tcp":
            s.listen(64)
        s.setblocking(False)
        self.listeners[(ip, proto)] = s
        self.sel.register(s, selectors.EVENT_READ, (proto, ip))

    def resolve(self, data: bytes, local_ip: str, client: str) -> bytes | None:
        """The reply to `data`, or None when it went to the forwarder (which replies itself)."""
        table = self.tables.get(local_ip)
        try:
            q = dns.parse_query(data)
        except dns.DnsFormatError:
            return dns.error_response(data, dns.FORMERR)
        if table is None or not table.allows(client):
            return dns.build_response(q, [], rcode=dns.REFUSED)
        got = table.answer(q)
        if got is None or got[0] != dns.NOERROR:
            # a container on several networks resolves the names of all of them (as in Docker)
            for other in self.clients.get(client, ()):
                t = self.by_name.get(other)
                more = t.answer(q) if t is not None and t is not table else None
                if more is not None and more[0] == dns.NOERROR:
                    got = more
                    break
        if got is None:
            return None
        rcode, answers = got
        return dns.build_response(q, answers, rcode=rcode)

    def forward(self, data: bytes) -> bytes:
        for host, port in self.upstreams:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(self.timeout)
                try:
                    s.connect((host, port))
                    s.send(data)
                    reply = s.recv(65535)
                except OSError:
                    continue
                if reply[:2] == data[:2]:
                    return reply
        return dns.error_response(data, dns.SERVFAIL)

    def _udp(self, s: socket.socket, local_ip: str) -> None:
        try:
            data, addr = s.recvfrom(4096)
        except BlockingIOError:
            return
        reply = self.resolve(data, local_ip, addr[0])
        if reply is not None:
            s.sendto(reply, addr)
            return

        def job() -> None:
            with contextlib.suppress(OSError):
                s.sendto(self.forward(data), addr)

        self.pool.submit(job)

    def _tcp(self, conn: socket.socket, local_ip: str, client: str) -> None:
        with conn:
            conn.settimeout(self.timeout * 2)
            try:
                while True:
                    head = conn.recv(2, socket.MSG_WAITALL)
                    if len(head) < 2:
                        return
                    data = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                    reply = self.resolve(data, local_ip, client)
                    if reply is None:
                        reply = self.forward(data)  # upstream over UDP; good enough for TC retries
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def serve(self, control: socket.socket) -> None:
        self.sel.register(control, selectors.EVENT_READ, ("control", ""))
        while self.tables:
            for key, _ in self.sel.select(timeout=5.0):
                kind, ip = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if kind == "udp":
                    self._udp(sock, ip)
                elif kind == "tcp":
                    with contextlib.suppress(BlockingIOError):
                        conn, addr = sock.accept()
                        self.pool.submit(self._tcp, conn, ip, addr[0])
                elif not self._control(sock):
                    return
            with contextlib.suppress(OSError):  # a fallback if a reload request was lost
                if (self.dir / "dns.json").stat().st_mtime != self.mtime:
                    self.load()

    def _control(self, control: socket.socket) -> bool:
        conn, _ = control.accept()
        with conn:
            conn.settimeout(2)
            cmd = conn.recv(64).decode().strip()
            if cmd == "stop":
                conn.sendall(b"ok 0\n")
                return False
            n = self.load()
            conn.sendall(f"ok {n}\n".encode())
            return n > 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    state_root = args[0]
    d = net_dir(state_root)
    d.mkdir(parents=True, exist_ok=True)
    lock = open(d / "dns.lock", "w")  # noqa: SIM115 -- held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server runs for this state root
    server = Server(state_root)
    if server.load() == 0:
        return 0
    sock_path = d / "dns.sock"
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(sock_path))
    control.listen(16)
    (d / "dns.pid").write_text(f"{os.getpid()}\n")
    try:
        server.serve(control)
    finally:
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (d / "dns.pid").unlink()
        control.close()
    return 0


def _ask(state_root: str | Path, cmd: str) -> str | None:
    path = net_dir(state_root) / "dns.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(str(path))
        s.sendall(cmd.encode() + b"\n")
        return s.recv(64).decode().strip()
    except OSError:
        return None
    finally:
        s.close()


def reload(state_root: str | Path, *, wait: float = 5.0) -> None:
    """Make the server serve the current dns.json: ask a running one, else start one and wait."""
    if _ask(state_root, "reload") is not None:
        return
    cfg = json.loads((net_dir(state_root) / "dns.json").read_text())
    if not cfg["networks"]:
        return
    log = open(net_dir(state_root) / "dns.log", "ab")  # noqa: SIM115
    with log:
        subprocess.Popen(
            [sys.executable, "-m", "stackd.net.dns_server", str(state_root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + wait
    delay = 0.005
    while time.monotonic() < deadline:
        if _ask(state_root, "reload") is not None:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise OSError(f"the stackd DNS server for {state_root} did not start (see {log.name})")


def stop(state_root: str | Path) -> None:
    """Stop the server (used when the last network goes and by tests); waits for it to exit."""
    d = net_dir(state_root)
    if _ask(state_root, "stop") is None or not (d / "dns.lock").exists():
        return
    with open(d / "dns.lock", "w") as lock:  # the server holds it until it exits
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.01)


if __name__ == "__main__":
    threading.current_thread().name = "stackd-dns"
    sys.exit(main())
