"""DNS messages (sans-IO), the server's answer table, and resolv.conf / hosts rendering."""

from __future__ import annotations

import struct

import pytest

from stackd.errors import UsageError
from stackd.net import dns, resolvconf
from stackd.net.dns_server import Table


def test_query_roundtrip_and_answers() -> None:
    q = dns.parse_query(dns.build_query("Web.Front.", dns.A, qid=77))
    assert (q.id, q.name, q.qtype, q.rd) == (77, "web.front", dns.A, True)
    r = dns.parse_response(dns.build_response(q, ["10.0.0.2", "10.0.0.3"]))
    assert r.id == 77 and r.rcode == dns.NOERROR and not r.truncated
    assert r.answers == [(dns.A, "10.0.0.2"), (dns.A, "10.0.0.3")]
    q6 = dns.parse_query(dns.build_query("web", dns.AAAA))
    assert dns.parse_response(dns.build_response(q6, ["fd00::2"])).answers == [(dns.AAAA, "fd00::2")]
    qp = dns.parse_query(dns.build_query(dns.reverse_name("10.0.0.2"), dns.PTR))
    assert dns.parse_response(dns.build_response(qp, ["web.front"])).answers == [(dns.PTR, "web.front")]


def test_nxdomain_servfail_formerr_and_truncation() -> None:
    q = dns.parse_query(dns.build_query("nope"))
    assert dns.parse_response(dns.build_response(q, [], rcode=dns.NXDOMAIN)).rcode == dns.NXDOMAIN
    assert dns.parse_response(dns.error_response(dns.build_query("x"), dns.SERVFAIL)).rcode == dns.SERVFAIL
    assert dns.parse_response(dns.error_response(b"\x00\x05garbage", dns.FORMERR)).rcode == dns.FORMERR
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(40)]  # 40*16 bytes > 512
    r = dns.parse_response(dns.build_response(q, many))
    assert r.truncated and r.answers == []
    with pytest.raises(dns.DnsFormatError):
        dns.parse_query(b"\x00")
    with pytest.raises(dns.DnsFormatError):  # a response is not a query
        dns.parse_query(dns.build_response(q, []))


def test_edns_udp_size_allows_bigger_answers() -> None:
    opt = b"\x00" + struct.pack("!HHIH", dns.OPT, 4096, 0, 0)
    raw = bytearray(dns.build_query("many"))
    raw[10:12] = struct.pack("!H", 1)
    q = dns.parse_query(bytes(raw) + opt)
    assert q.udp_size == 4096
    many = [f"10.0.0.{i + 1}" for i in range(40)]
    assert len(dns.parse_response(dns.build_response(q, many)).answers) == 40


def test_compressed_names_parse() -> None:
    q = dns.parse_query(dns.build_query("a.example"))
    resp = dns.build_response(q, ["1.2.3.4"])  # answers point back at the question (0xc00c)
    assert b"\xc0\x0c" in resp and dns.parse_response(resp).answers == [(dns.A, "1.2.3.4")]


def table() -> Table:
    return Table({"name": "front", "subnets": ["10.1.0.0/24"],
                  "records": {"web": ["10.1.0.2", "10.1.0.3", "fd00::2"], "db": ["10.1.0.4"]},
                  "ptr": {"10.1.0.4": "db.front"}})


def ask(t: Table, name: str, qtype: int = dns.A) -> tuple[int, list[str]] | None:
    return t.answer(dns.parse_query(dns.build_query(name, qtype)))


def test_table_answers_names_networks_and_round_robin() -> None:
    t = table()
    assert ask(t, "db") == (dns.NOERROR, ["10.1.0.4"])
    assert ask(t, "DB.front") == (dns.NOERROR, ["10.1.0.4"])
    firsts = {ask(t, "web")[1][0] for _ in range(4)}  # type: ignore[index]
    assert firsts == {"10.1.0.2", "10.1.0.3"}
    assert ask(t, "web", dns.AAAA) == (dns.NOERROR, ["fd00::2"])
    assert ask(t, "db", dns.AAAA) == (dns.NOERROR, [])  # NODATA, not forwarded
    assert ask(t, "nosuch") == (dns.NXDOMAIN, [])
    assert ask(t, "nosuch.front") == (dns.NXDOMAIN, [])
    assert ask(t, "debian.org") is None  # forwarded
    assert ask(t, dns.reverse_name("10.1.0.4"), dns.PTR) == (dns.NOERROR, ["db.front"])
    assert t.allows("10.1.0.9") and not t.allows("10.2.0.9")


def test_resolv_conf() -> None:
    host = resolvconf.parse_resolv_conf(
        "# c\nnameserver 127.0.0.53\nnameserver 10.0.0.53\nsearch corp.example\noptions edns0\n")
    assert host.nameservers == ("127.0.0.53", "10.0.0.53")
    text = resolvconf.resolv_conf(host, resolvconf.ResolvOptions(), embedded_dns="10.1.0.1")
    assert text == "nameserver 10.1.0.1\nsearch corp.example\noptions edns0 ndots:0\n"
    text = resolvconf.resolv_conf(host, resolvconf.ResolvOptions())
    assert text.startswith("nameserver 10.0.0.53\n")  # loopback resolvers are unusable inside
    opts = resolvconf.ResolvOptions(dns=["1.1.1.1"], dns_search=["a.example"], dns_opt=["ndots:2"])
    assert resolvconf.resolv_conf(host, opts, embedded_dns="10.1.0.1") == (
        "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2\n")
    only_local = resolvconf.parse_resolv_conf("nameserver 127.0.0.1\n")
    assert "nameserver 8.8.8.8" in resolvconf.resolv_conf(only_local, resolvconf.ResolvOptions())


def test_hosts_file_and_extra_hosts() -> None:
    pairs = resolvconf.parse_extra_hosts(["db:10.0.0.9", "gw=host-gateway", "v6:[fd00::1]"])
    assert pairs == [("db", "10.0.0.9"), ("gw", "host-gateway"), ("v6", "fd00::1")]
    assert resolvconf.parse_extra_hosts({"a": ["1.2.3.4", "::1"]}) == [("a", "1.2.3.4"), ("a", "::1")]
    text = resolvconf.hosts_file(resolvconf.HostsOptions(
        hostname="web", domainname="corp", own=["10.1.0.2"], extra_hosts=pairs, host_gateway="10.1.0.1"))
    assert "10.0.0.9\tdb\n" in text and "10.1.0.1\tgw\n" in text
    assert "10.1.0.2\tweb.corp web\n" in text and text.startswith("127.0.0.1\tlocalhost\n")
    with pytest.raises(UsageError):
        resolvconf.parse_extra_hosts(["nocolon"])
