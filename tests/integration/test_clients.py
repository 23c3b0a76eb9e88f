"""Clients other than a plain Ethernet PXE ROM, through the whole filter:
real ironic, real pxefilterd, real dnsmasq, and raw InfiniBand (IPoIB)
DISCOVERs and DHCPv6 SOLICITs from the client namespace.

What dnsmasq does with each record form is pinned in
``test_dnsmasq_clients.py``; here pxefilterd must write those forms from
what ironic says.
"""

from __future__ import annotations

import time

import pytest

from pxefilterd_harness import dhcp6_probe, ib_probe
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dhcp6_probe import V6Client
from tests.integration.verdicts import UNKNOWN, eventually, mac

FAST = {'timeout': 0.6, 'retries': 1}


def until(check, expected, timeout=15.0):
    """Call ``check()`` until it returns ``expected``; fail with the last
    answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail('got %s, expected %s' % (got, expected))
        time.sleep(0.2)


def ib_guid(i):
    return '00:02:c9:03:00:0a:0b:%02x' % i


# -- InfiniBand ---------------------------------------------------------------

@pytest.mark.parametrize('deny_unknown', [False, True])
def test_infiniband_ports_follow_the_filter(ironic, runner_factory,
                                            dhcp_network, deny_unknown):
    """An IB port's client id (ironic: extra['client-id']) gets its node's
    verdict; IB clients ironic does not know follow the unknown policy,
    like unknown MACs."""
    ids = [ib_probe.ib_client_id(ib_guid(i)) for i in range(3)]
    nodes = []
    for i in range(2):
        node = ironic.create_node('ib-%d' % i)
        ironic.create_port(node, '00:02:c9:0a:0b:%02x' % i,
                           extra={'client-id': ids[i]})
        nodes.append(node)
    runner = runner_factory(options={'pxe_filter': {
        'deny_unknown_macs': str(deny_unknown)}}).start()
    runner.wait_ready()

    def offers():
        result = ib_probe.probe(dhcp_network, ids, **FAST)
        return {i: result[c].offer for i, c in enumerate(ids)}

    until(offers, {0: False, 1: False, 2: False})
    ironic.inspect(nodes[0])
    until(offers, {0: True, 1: False, 2: not deny_unknown})
    out = runner.ctl('explain', 'id:' + ids[0])
    assert 'Client id:%s' % ids[0] in out
    assert 'decision:  allow (rule inspected)' in out
    ironic.abort(nodes[0])
    until(offers, {0: False, 1: False, 2: False})
    assert runner.stop() == 0


# -- DHCPv6 -------------------------------------------------------------------


def test_dhcpv6_clients_are_filtered_by_mac_and_fail_closed(
        ironic, dhcp_network, v6_dnsmasq, harness_tmp, probe):
    nodes = []
    for i in range(2):
        node = ironic.create_node('v6-%d' % i)
        ironic.create_port(node, mac(i))
        nodes.append(node)
    clients = [V6Client('a', mac(0)),                       # node 0
               V6Client('b', mac(1), link_local='fe80::1234:b'),   # node 1
               V6Client('unknown', UNKNOWN),
               # dnsmasq cannot learn this one's MAC (no neighbour
               # discovery answer, a DUID that is not link-layer based)
               V6Client('hidden', '52:54:00:00:66:99',
                        link_local='fe80::dead:99', answer_nd=False,
                        duid=dhcp6_probe.duid_en(343, b'\x09'))]
    dhcp6_probe.add_noarp_neighbour(dhcp_network, 'fe80::dead:99',
                                    '52:54:00:00:66:99')
    runner = PxefilterdRunner(harness_tmp / 'pxefilterd-v6', ironic.url,
                              v6_dnsmasq).start()
    try:
        runner.wait_ready()

        def answered():
            result = dhcp6_probe.probe(dhcp_network, clients, **FAST)
            return {name: a.advertise for name, a in result.items()}

        until(answered, {'a': False, 'b': False, 'unknown': False,
                         'hidden': False})
        ironic.inspect(nodes[0])
        # unknown MACs may boot during an inspection (the default policy):
        # the unknown on-link client is answered, the hidden one is not.
        until(answered, {'a': True, 'b': False, 'unknown': True,
                         'hidden': False})
        eventually(probe, allowed=[mac(0), UNKNOWN], denied=[mac(1)])
        ironic.abort(nodes[0])
        until(answered, {'a': False, 'b': False, 'unknown': False,
                         'hidden': False})
        assert 'cannot determine client MAC address' in v6_dnsmasq.log_text()
        assert runner.stop() == 0
    finally:
        runner.close()
