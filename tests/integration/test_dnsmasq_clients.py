"""What dnsmasq 2.90's hostsdir records do to IPoIB and DHCPv6 clients.

dnsmasq-level facts (hand-written hostsdir files, no pxefilterd daemon),
each checked in both directions (an answered and a silent client):

A. IPoIB DHCPv4 clients (htype 32, hlen 0, option 61 client id):

- MAC records and the ``*:*:*:*:*:*`` wildcard never match them: dnsmasq
  compares hardware addresses only when the lengths match
  (``src/dhcp-common.c:config_has_mac`` / ``find_config_match``).
- ``id:<client id as colon hex>[,ignore]`` matches them; rewriting the file
  flips deny <-> allow without SIGHUP (the newest record wins).  ``id:``
  followed by hex without colons is an ASCII id, ``id:*`` means "ignore the
  client id" -- neither matches.  The file name does not matter.
- ``20-:`` (hardware type 0x20 = 32, zero-length address) is an *exact*
  match for every hlen-0 IPoIB request: ``20-:,ignore`` / ``20-:`` is the
  unknown-IB policy, toggled in place; an ``id:`` record still wins
  (client ids are compared first), and Ethernet answers do not change.
- ``dhcp-mac=set:ib,20-:`` + ``dhcp-ignore=tag:ib,tag:!known`` fails
  closed for unknown IB clients without touching Ethernet.

B. DHCPv6 (range in a ULA):

- MAC records and the wildcard apply when dnsmasq learns the MAC through
  neighbour discovery (also for a link-local address not derived from the
  MAC) or from an RFC 6939 option of a relay; both a raw SOLICIT and ISC
  ``dhclient -6`` obey them.
- When the MAC cannot be learned (on-link client that does not answer ND,
  relay without option 79) a wildcard deny fails open.
- ``:,ignore`` (zero-length address, any type) denies exactly those
  clients; ``dhcp-ignore=tag:dhcpv6,tag:!known`` fails closed for them with
  the wildcard allow in place, leaving DHCPv4 untouched;
  ``dhcp-range=tag:known,...`` is not silent (ADVERTISE NoAddrsAvail).
"""

from __future__ import annotations

import itertools

import pytest
from pxefilterd_harness import dhcp6_probe, dhcp_probe, ib_probe
from pxefilterd_harness.dhcp6_probe import V6Client
from pxefilterd_harness.dnsmasq import BOOT_FILE, DnsmasqInstance
from pxefilterd_harness.netns import RANGE_END, RANGE_START

IB_A = ib_probe.ib_client_id("00:02:c9:03:00:0a:0b:01")
IB_B = ib_probe.ib_client_id("00:02:c9:03:00:0a:0b:02")
IB_C = ib_probe.ib_client_id("00:02:c9:03:00:0a:0b:03")
IB_PORT_ADDRESS = "00:02:c9:0a:0b:01"   # IB_A's 6-byte ironic address
ETH_DENIED = "52:54:00:00:50:01"
ETH_OTHER = "52:54:00:00:50:02"
UNKNOWN_IB_FILE = "unknown_ib_filter"
NO_MAC_FILE = "unknown_nomac_filter"
STATUS_NOADDRSAVAIL = 2   # DHCPv6 status code NoAddrsAvail

# DHCPv6 clients.  ND-answering ones let dnsmasq learn their MAC.
V6_EUI = V6Client("eui64", "52:54:00:00:60:01")
V6_OTHER_LL = V6Client("other-ll", "52:54:00:00:60:02",
                       link_local="fe80::1234:2")
V6_SILENT = V6Client("no-nd", "52:54:00:00:60:03",
                     link_local="fe80::dead:3", answer_nd=False,
                     duid=dhcp6_probe.duid_en(343, b"\x01\x02\x03\x04"))
V6_RELAYED = V6Client("relay-no-79", "52:54:00:00:60:04",
                      duid=dhcp6_probe.duid_uuid(
                          "5b1a0c1e-1111-4222-8333-944445555666"))
V6_RELAYED_79 = V6Client("relay-79", "52:54:00:00:60:05", rfc6939=True,
                         duid=dhcp6_probe.duid_en(343, b"\x05"))
V6_ALL_MACS = [c.mac for c in (V6_EUI, V6_OTHER_LL, V6_SILENT, V6_RELAYED,
                               V6_RELAYED_79)]

FAST = {"timeout": 0.6, "retries": 1}


# ------------------------------------------------------------------ helpers

def put(dm, hostsdir, name, content):
    """Write hostsdir file *name* and wait until dnsmasq has re-read it."""
    before = dm.log_text().count(f"read {hostsdir.path / name}\n")
    hostsdir.write(name, content)
    assert dm.wait_for_log(f"read {hostsdir.path / name}\n",
                           count=before + 1), dm.log_text()[-2000:]


def ib(network, ids):
    """``{client_id: offered?}`` for IPoIB DISCOVERs."""
    return {c: o.offer for c, o in
            ib_probe.probe(network, list(ids), **FAST).items()}


def eth(network, macs):
    """``{mac: offered?}`` for Ethernet DISCOVERs."""
    return {m: o.offer for m, o in
            dhcp_probe.probe(network, list(macs), **FAST).items()}


def v6(network, *clients, relay=False):
    """``{name: Advertise}`` for DHCPv6 SOLICITs (on-link or relayed)."""
    return dhcp6_probe.probe(network, list(clients), relay=relay, **FAST)


def answered(results):
    return {name: a.advertise for name, a in results.items()}


def in_range(address):
    return tuple(map(int, RANGE_START.split("."))) \
        <= tuple(map(int, address.split("."))) \
        <= tuple(map(int, RANGE_END.split(".")))


@pytest.fixture
def dnsmasq_with(dhcp_network, hostsdir, harness_tmp):
    """Callable ``(*extra_options, ipv6=False) -> started DnsmasqInstance``.

    With *ipv6*, the veths get IPv6 addresses and dnsmasq a DHCPv6 range
    (plus ``range_tags``).  Every instance is stopped at teardown.
    """
    made = []
    counter = itertools.count()

    def make(*extra, ipv6=False, range_tags=()):
        options = tuple(extra)
        if ipv6:
            dhcp6_probe.setup_ipv6(dhcp_network)
            options = dhcp6_probe.dnsmasq_options(tags=range_tags) + options
        dm = DnsmasqInstance(dhcp_network, hostsdir.path,
                             harness_tmp / f"dm-{next(counter)}",
                             extra_options=options)
        made.append(dm)
        dm.start()
        return dm

    try:
        yield make
    finally:
        for dm in made:
            dm.stop()


# ------------------------------------------------------------------ A

def test_ib_client_is_not_matched_by_mac_records(dhcp_network, hostsdir,
                                                 dnsmasq):
    put(dnsmasq, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    put(dnsmasq, hostsdir, IB_PORT_ADDRESS, f"{IB_PORT_ADDRESS},ignore\n")
    offers = ib_probe.probe(dhcp_network, [IB_A], **FAST)
    assert eth(dhcp_network, [ETH_OTHER]) == {ETH_OTHER: False}, \
        "the wildcard deny is in force for Ethernet"
    assert offers[IB_A].offer, "yet the IB client is served"
    assert offers[IB_A].file == BOOT_FILE and in_range(offers[IB_A].yiaddr)
    log = dnsmasq.log_text()
    # dnsmasq takes htype 32 on an Ethernet veth, logs the client id as the
    # client's "MAC" (rfc2131.c:extended_hwaddr) and answers by broadcast.
    assert f"DHCPDISCOVER(veth-srv) {IB_A} \n" in log
    assert f"DHCPOFFER(veth-srv) {offers[IB_A].yiaddr} {IB_A} \n" in log
    assert "broadcast response" in log
    assert offers[IB_A].echoed_client_id is None   # option 61 not echoed


def test_ib_id_record_toggles_in_place(dhcp_network, hostsdir, dnsmasq):
    put(dnsmasq, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*\n")
    pid = dnsmasq.pid()
    put(dnsmasq, hostsdir, IB_A, f"id:{IB_A},ignore\n")
    assert ib(dhcp_network, [IB_A, IB_B]) == {IB_A: False, IB_B: True}
    assert f"{IB_A} ignored" in dnsmasq.log_text()
    put(dnsmasq, hostsdir, IB_A, f"id:{IB_A}\n")
    assert ib(dhcp_network, [IB_A, IB_B]) == {IB_A: True, IB_B: True}
    put(dnsmasq, hostsdir, IB_A, f"id:{IB_A},ignore\n")
    assert ib(dhcp_network, [IB_A, IB_B]) == {IB_A: False, IB_B: True}
    assert dnsmasq.pid() == pid        # inotify only, never restarted


def test_ib_id_record_syntax(dhcp_network, hostsdir, dnsmasq):
    # Upper case, "ID:", any file name: matches (IB_A denied).
    put(dnsmasq, hostsdir, "any-name", f"ID:{IB_A.upper()},ignore\n")
    # Hex without colons is taken as an ASCII client id: no match.
    put(dnsmasq, hostsdir, "no-colons",
        f"id:{IB_B.replace(':', '')},ignore\n")
    # "id:*" means "ignore the client id", not "any client id".
    put(dnsmasq, hostsdir, "id-star", "id:*,ignore\n")
    # A typed wildcard still needs hlen 6; "20-*" is not even parsed.
    put(dnsmasq, hostsdir, "typed-wildcard", "20-*:*:*:*:*:*,ignore\n")
    hostsdir.write("typed-star", "20-*,ignore\n")
    assert dnsmasq.wait_for_log("bad DHCP host name at line 1 of "
                                f"{hostsdir.path / 'typed-star'}")
    assert ib(dhcp_network, [IB_A, IB_B, IB_C]) == \
        {IB_A: False, IB_B: True, IB_C: True}


def test_unknown_ib_policy_record(dhcp_network, hostsdir, dnsmasq):
    put(dnsmasq, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*\n")
    put(dnsmasq, hostsdir, ETH_DENIED, f"{ETH_DENIED},ignore\n")
    put(dnsmasq, hostsdir, IB_A, f"id:{IB_A}\n")
    put(dnsmasq, hostsdir, IB_B, f"id:{IB_B},ignore\n")
    eth_expected = {ETH_DENIED: False, ETH_OTHER: True}

    put(dnsmasq, hostsdir, UNKNOWN_IB_FILE, "20-:,ignore\n")
    assert ib(dhcp_network, [IB_A, IB_B, IB_C]) == \
        {IB_A: True, IB_B: False, IB_C: False}, \
        "unknown IB denied; the exact id: allow (older record) wins"
    assert eth(dhcp_network, [ETH_DENIED, ETH_OTHER]) == eth_expected

    put(dnsmasq, hostsdir, UNKNOWN_IB_FILE, "20-:\n")
    assert ib(dhcp_network, [IB_A, IB_B, IB_C]) == \
        {IB_A: True, IB_B: False, IB_C: True}, \
        "unknown IB allowed; the exact id: deny (older record) wins"
    assert eth(dhcp_network, [ETH_DENIED, ETH_OTHER]) == eth_expected

    put(dnsmasq, hostsdir, UNKNOWN_IB_FILE, "20-:,ignore\n")
    put(dnsmasq, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    assert ib(dhcp_network, [IB_A, IB_C]) == {IB_A: True, IB_C: False}
    assert eth(dhcp_network, [ETH_DENIED, ETH_OTHER]) == \
        {ETH_DENIED: False, ETH_OTHER: False}


def test_ib_dhcp_ignore_not_known_fails_closed(dhcp_network, hostsdir,
                                               dnsmasq_with):
    # "20-:" as a dhcp-mac tags every hlen-0 IPoIB request (and nothing
    # else), so the ignore rule cannot touch Ethernet clients, not even
    # with no wildcard file at all.
    dm = dnsmasq_with("dhcp-mac=set:ib,20-:", "dhcp-ignore=tag:ib,tag:!known")
    assert ib(dhcp_network, [IB_C]) == {IB_C: False}
    assert eth(dhcp_network, [ETH_OTHER]) == {ETH_OTHER: True}
    assert f"{IB_C} ignored" in dm.log_text()
    put(dm, hostsdir, IB_A, f"id:{IB_A}\n")
    assert ib(dhcp_network, [IB_A, IB_C]) == {IB_A: True, IB_C: False}
    assert "tags: known, ib, veth-srv" in dm.log_text()
    put(dm, hostsdir, UNKNOWN_IB_FILE, "20-:\n")    # makes them "known"
    assert ib(dhcp_network, [IB_C]) == {IB_C: True}


# ------------------------------------------------------------------ B

def test_dhcpv6_mac_records_apply_when_mac_is_learned(dhcp_network, hostsdir,
                                                      dnsmasq_with):
    dm = dnsmasq_with(ipv6=True)
    put(dm, hostsdir, V6_EUI.mac, f"{V6_EUI.mac},ignore\n")
    res = v6(dhcp_network, V6_EUI, V6_OTHER_LL)
    assert answered(res) == {"eui64": False, "other-ll": True}
    assert res["other-ll"].address.startswith(dhcp6_probe.PREFIX)
    log = dm.log_text()
    # learned by ND, also for a link-local address not derived from the MAC
    assert f"client MAC address: {V6_OTHER_LL.mac}" in log
    assert f"client MAC address: {V6_EUI.mac}" in log
    assert "DHCPSOLICIT(veth-srv) 00:03:00:01:52:54:00:00:60:01 ignored" \
        in log

    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    assert answered(v6(dhcp_network, V6_OTHER_LL)) == {"other-ll": False}
    put(dm, hostsdir, V6_OTHER_LL.mac, f"{V6_OTHER_LL.mac}\n")
    assert answered(v6(dhcp_network, V6_EUI, V6_OTHER_LL)) == \
        {"eui64": False, "other-ll": True}, "exact allow beats the wildcard"


def test_dhclient6_obeys_mac_records(dhcp_network, hostsdir, dnsmasq_with):
    dm = dnsmasq_with(ipv6=True)
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    put(dm, hostsdir, V6_EUI.mac, f"{V6_EUI.mac}\n")
    allowed = dhcp6_probe.dhclient6_probe(dhcp_network, V6_EUI.mac,
                                          timeout=5)
    denied = dhcp6_probe.dhclient6_probe(dhcp_network, V6_OTHER_LL.mac,
                                         timeout=3,
                                         link_local=V6_OTHER_LL.link_local)
    assert allowed.bound, allowed.output
    assert allowed.address.startswith(dhcp6_probe.PREFIX)
    assert not denied.advertise, denied.output
    assert "XMT: Solicit" in denied.output
    assert "DHCPSOLICIT(veth-srv) 00:03:00:01:52:54:00:00:60:02 ignored" \
        in dm.log_text()


def test_dhcpv6_unknown_mac_fails_open(dhcp_network, hostsdir, dnsmasq_with):
    dm = dnsmasq_with(ipv6=True)
    dhcp6_probe.add_noarp_neighbour(dhcp_network, V6_SILENT.link_local,
                                    V6_SILENT.mac)
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    for mac in V6_ALL_MACS:
        put(dm, hostsdir, mac, f"{mac},ignore\n")
    assert answered(v6(dhcp_network, V6_SILENT)) == {"no-nd": True}
    assert answered(v6(dhcp_network, V6_RELAYED, V6_RELAYED_79,
                       relay=True)) == \
        {"relay-no-79": True, "relay-79": False}
    log = dm.log_text()
    assert log.count("cannot determine client MAC address") >= 2
    assert f"client MAC address: {V6_RELAYED_79.mac}" in log   # option 79


def test_dhcpv6_zero_length_mac_record(dhcp_network, hostsdir, dnsmasq_with):
    dm = dnsmasq_with(ipv6=True)
    dhcp6_probe.add_noarp_neighbour(dhcp_network, V6_SILENT.link_local,
                                    V6_SILENT.mac)
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*\n")
    put(dm, hostsdir, NO_MAC_FILE, ":,ignore\n")
    assert answered(v6(dhcp_network, V6_EUI, V6_SILENT)) == \
        {"eui64": True, "no-nd": False}
    assert answered(v6(dhcp_network, V6_RELAYED, V6_RELAYED_79,
                       relay=True)) == \
        {"relay-no-79": False, "relay-79": True}
    assert eth(dhcp_network, [ETH_OTHER]) == {ETH_OTHER: True}
    assert ib(dhcp_network, [IB_C]) == {IB_C: False}   # hlen 0 too
    put(dm, hostsdir, NO_MAC_FILE, ":\n")
    assert answered(v6(dhcp_network, V6_SILENT)) == {"no-nd": True}
    assert answered(v6(dhcp_network, V6_RELAYED, relay=True)) == \
        {"relay-no-79": True}


def test_dhcpv6_dhcp_ignore_not_known_fails_closed(dhcp_network, hostsdir,
                                                   dnsmasq_with):
    dm = dnsmasq_with("dhcp-ignore=tag:dhcpv6,tag:!known", ipv6=True)
    dhcp6_probe.add_noarp_neighbour(dhcp_network, V6_SILENT.link_local,
                                    V6_SILENT.mac)
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*\n")
    put(dm, hostsdir, ETH_DENIED, f"{ETH_DENIED},ignore\n")
    assert answered(v6(dhcp_network, V6_EUI, V6_SILENT)) == \
        {"eui64": True, "no-nd": False}
    assert answered(v6(dhcp_network, V6_RELAYED, V6_RELAYED_79,
                       relay=True)) == \
        {"relay-no-79": False, "relay-79": True}
    # DHCPv4 never carries the dhcpv6 tag: Ethernet and IB as before.
    assert eth(dhcp_network, [ETH_DENIED, ETH_OTHER]) == \
        {ETH_DENIED: False, ETH_OTHER: True}
    assert ib(dhcp_network, [IB_C]) == {IB_C: True}
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*,ignore\n")
    assert answered(v6(dhcp_network, V6_EUI)) == {"eui64": False}


def test_dhcpv6_range_tag_known_is_not_silent(dhcp_network, hostsdir,
                                              dnsmasq_with):
    dm = dnsmasq_with(ipv6=True, range_tags=("known",))
    dhcp6_probe.add_noarp_neighbour(dhcp_network, V6_SILENT.link_local,
                                    V6_SILENT.mac)
    put(dm, hostsdir, "unknown_hosts_filter", "*:*:*:*:*:*\n")
    res = v6(dhcp_network, V6_EUI, V6_SILENT)
    assert res["eui64"].advertise and res["eui64"].address
    assert res["no-nd"].advertise and res["no-nd"].address is None
    assert res["no-nd"].status == STATUS_NOADDRSAVAIL
    assert "no addresses available" in dm.log_text()
