"""Proof that the integration harness itself works against real services.

(a) dnsmasq in a namespace obeys hostsdir files as the raw probe sees it, and
    ISC dhclient agrees with the raw probe; (b) a standalone ironic moves
    nodes through the states pxefilterd cares about and lists bulk-loaded
    ports; (c) ironic can be stopped and started again on the same URL.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest
from pxefilterd_harness import dhcp_probe
from pxefilterd_harness.dnsmasq import BOOT_FILE, DnsmasqError, DnsmasqInstance
from pxefilterd_harness.ironic import IronicError
from pxefilterd_harness.netns import RANGE_END, RANGE_START

MAC0 = "52:54:00:00:10:00"   # never written: unknown
MAC1 = "52:54:00:00:10:01"   # denied
MAC2 = "52:54:00:00:10:02"   # allowed
MAC3 = "52:54:00:00:10:03"   # unknown, probed under the wildcard deny


def in_range(address):
    """True if *address* is inside the test dnsmasq's DHCP range."""
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_address(RANGE_START) <= ip \
        <= ipaddress.ip_address(RANGE_END)


def assert_only_our_dnsmasq(network, dm):
    """No stray process may answer in the server namespace."""
    assert network.pids()[network.server_ns] == [dm.pid()]


def landed(dm, hostsdir, name, count=1):
    """Wait until dnsmasq logged reading hostsdir file *name* *count* times."""
    return dm.wait_for_log(f"read {hostsdir.path / name}", count=count)


# ------------------------------------------------------------------ (a)

def test_dnsmasq_hostsdir_decides_offers(dhcp_network, hostsdir, dnsmasq,
                                         probe):
    assert_only_our_dnsmasq(dhcp_network, dnsmasq)

    offers = probe([MAC0])
    assert offers[MAC0].offer
    assert offers[MAC0].file == BOOT_FILE
    assert offers[MAC0].server == dhcp_network.server_address
    assert in_range(offers[MAC0].yiaddr)

    hostsdir.deny(MAC1)
    hostsdir.allow(MAC2)
    assert oct(os.stat(hostsdir.path / MAC1).st_mode & 0o777) == "0o644"
    assert landed(dnsmasq, hostsdir, MAC1) and landed(dnsmasq, hostsdir, MAC2)
    offers = probe([MAC1, MAC2])
    assert not offers[MAC1].offer and offers[MAC1].attempts == 4
    assert offers[MAC2].offer and offers[MAC2].file == BOOT_FILE

    hostsdir.unknown(deny=True)
    assert landed(dnsmasq, hostsdir, "unknown_hosts_filter")
    stats = {}
    offers = probe([MAC3, MAC2, MAC1], stats=stats)
    assert not offers[MAC3].offer, "wildcard deny must silence unknown MACs"
    assert offers[MAC2].offer, "an exact allow must beat the wildcard deny"
    assert not offers[MAC1].offer
    assert stats["socket_drops"] == 0
    assert dhcp_network.udp_rcvbuf_errors() == 0
    assert "Permission denied" not in dnsmasq.log_text()


def test_dhclient_agrees_with_raw_probe(dhcp_network, hostsdir, dnsmasq,
                                        probe):
    hostsdir.unknown(deny=True)
    hostsdir.allow(MAC2)
    assert landed(dnsmasq, hostsdir, MAC2)

    raw = probe([MAC2, MAC3])
    allowed = dhcp_probe.dhclient_probe(dhcp_network, MAC2)
    denied = dhcp_probe.dhclient_probe(dhcp_network, MAC3, timeout=4)

    assert raw[MAC2].offer and allowed.offer and allowed.bound, \
        allowed.output
    assert in_range(allowed.address)
    assert MAC2 in dnsmasq.leases()        # the full exchange took a lease
    assert not raw[MAC3].offer
    assert not denied.offer and not denied.bound, denied.output
    assert "DHCPDISCOVER" in denied.output  # it did ask
    assert denied.seconds >= 4
    # the macvlans are gone again
    links = subprocess.run(
        ["ip", "-n", dhcp_network.client_ns, "-o", "link"],
        capture_output=True, text=True, timeout=10, check=True).stdout
    assert "dhc" not in links


def test_probe_classifies_a_thousand_macs(hostsdir, dnsmasq, probe):
    macs = [f"52:54:00:01:{i >> 8:02x}:{i & 255:02x}" for i in range(1000)]
    denied = set(macs[::2])
    for mac in denied:
        hostsdir.deny(mac)
    assert landed(dnsmasq, hostsdir, macs[-2])
    stats = {}
    offers = probe(macs, stats=stats)
    assert {m for m, o in offers.items() if not o.offer} == denied
    assert all(o.file == BOOT_FILE for o in offers.values() if o.offer)
    assert stats["socket_drops"] == 0


def test_dnsmasq_start_stop_by_argv(dhcp_network, dnsmasq_instance):
    dm = dnsmasq_instance
    assert not dm.is_running()
    subprocess.run(dm.start_argv(), check=True, timeout=15)
    pid = dm.pid()
    assert pid and os.path.exists(f"/proc/{pid}")
    with pytest.raises(DnsmasqError):
        dm.start()                          # refuses a second instance
    subprocess.run(dm.stop_argv(), check=True, timeout=15)
    assert dm.wait_gone(pid, 10)
    assert dm.pid() is None                 # stale pid file is not trusted
    assert dhcp_network.pids()[dhcp_network.server_ns] == []
    assert not dm.stop()                    # idempotent


def test_dnsmasq_refuses_hostsdir_nobody_cannot_read(dhcp_network,
                                                     harness_tmp):
    private = harness_tmp / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    with pytest.raises(ValueError, match="nobody"):
        DnsmasqInstance(dhcp_network, private, harness_tmp / "dm")


# ------------------------------------------------------------------ (b)

def test_ironic_node_states_and_ports(ironic):
    a = ironic.create_node("node-a")
    b = ironic.create_node("node-b")
    pa = ironic.create_port(a, "52:54:00:00:20:01")
    ironic.create_port(b, "52:54:00:00:20:02")
    assert ironic.provision_state(a) == "manageable"

    ironic.inspect(a)
    assert ironic.provision_state(a) == "inspect wait"
    assert ironic.provision_state(b) == "manageable"
    waiting = ironic.list_nodes(provision_state="inspect wait")
    assert [n["uuid"] for n in waiting] == [a]
    ports = {p["address"]: p["node_uuid"] for p in ironic.list_ports()}
    assert ports == {"52:54:00:00:20:01": a, "52:54:00:00:20:02": b}

    ironic.abort(a)
    assert ironic.provision_state(a) == "inspect failed"
    ironic.delete_port(pa)
    assert [p["address"] for p in ironic.list_ports()] == \
        ["52:54:00:00:20:02"]
    with pytest.raises(IronicError) as err:
        ironic.delete_port(pa)
    assert err.value.status == 404


def test_ironic_bulk_load_lists_through_api(ironic_factory):
    svc = ironic_factory()
    loaded = svc.bulk_load(200, 10, "52:54:03")
    assert len(loaded.ports) == 2000
    svc.start()
    ports = svc.list_ports()
    assert len(ports) == 2000               # two pages of max_limit=1000
    assert {p["address"]: p["node_uuid"] for p in ports} == loaded.ports
    assert len(svc.list_nodes(provision_state="manageable")) == 200
    # the rows are good enough for the conductor to act on
    svc.inspect(loaded.nodes[0])
    assert [n["uuid"] for n in svc.list_nodes("inspect wait")] == \
        [loaded.nodes[0]]


def test_openstacksdk_sees_harness_ironic(ironic):
    openstack = pytest.importorskip("openstack")
    node = ironic.create_node("sdk-node")
    ironic.create_port(node, "52:54:00:00:30:01")
    conn = openstack.connection.Connection(
        auth_type="none", baremetal_endpoint_override=ironic.url)
    ports = list(conn.baremetal.ports(fields=["address", "node_uuid"]))
    assert [(p.address, p.node_id) for p in ports] == \
        [("52:54:00:00:30:01", node)]


# ------------------------------------------------------------------ (c)

def test_ironic_stop_start_same_url(ironic_factory):
    svc = ironic_factory()
    url = svc.url
    with pytest.raises(IronicError):        # not up yet: unreachable
        svc.request("GET", "/v1/nodes", timeout=2)
    svc.start()
    node = svc.create_node("survivor")
    assert svc.stop() == 0
    assert not svc.is_running()
    with pytest.raises(IronicError):
        svc.request("GET", "/v1/nodes", timeout=2)
    svc.start()
    assert svc.url == url
    assert svc.provision_state(node) == "manageable"
    svc.kill()                              # crash, then come back
    svc.start()
    assert [n["uuid"] for n in svc.list_nodes()] == [node]
