"""A bridge keeps its MAC while ports come and go (containers that stay keep a valid ARP entry)."""

from __future__ import annotations

import secrets

from pyroute2 import IPRoute

from stackd.net.linux import LinuxKernel, bridge_mac


def _mac(ipr: IPRoute, name: str) -> str:
    (link,) = ipr.get_links(ifname=name)
    return str(link.get_attr("IFLA_ADDRESS"))


def test_bridge_mac_is_fixed_when_ports_join_and_leave() -> None:
    name = f"sdm{secrets.token_hex(3)}"
    low, high = f"{name}a", f"{name}b"
    kernel = LinuxKernel()
    ipr = IPRoute()
    try:
        kernel.bridge_create(name, 1500, ())
        assert _mac(ipr, name) == bridge_mac(name)
        bridge = ipr.link_lookup(ifname=name)[0]
        # A port whose MAC sorts below the bridge's would take over an unfixed bridge MAC.
        ipr.link("add", ifname=low, kind="veth", peer=high, address="00:00:00:00:00:01")
        ipr.link("set", index=ipr.link_lookup(ifname=low)[0], master=bridge, state="up")
        assert _mac(ipr, name) == bridge_mac(name)
        ipr.link("del", index=ipr.link_lookup(ifname=low)[0])
        assert _mac(ipr, name) == bridge_mac(name)
    finally:
        for link in (low, name):
            if ipr.link_lookup(ifname=link):
                ipr.link("del", index=ipr.link_lookup(ifname=link)[0])
        ipr.close()
        kernel.close()


def test_container_mac_follows_its_ipv4_address() -> None:
    """Docker's scheme: a reused address keeps its MAC, so neighbours' ARP entries stay valid."""
    from stackd.net.veth import mac_for

    assert mac_for("10.218.16.4") == "02:42:0a:da:10:04"
    assert mac_for("10.218.16.4") == mac_for("10.218.16.4")
    assert mac_for("").startswith("02:42:")  # IPv6-only: random, still locally administered
