"""One filter per site: two pxefilterd + dnsmasq pairs against one ironic,
each scoped to its own shard, judged by DHCP probes of each site's
dnsmasq."""

from __future__ import annotations

import pytest

from pxefilterd_harness import dhcp_probe, preflight
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dnsmasq import DnsmasqInstance
from pxefilterd_harness.netns import DhcpNetwork
from tests.integration.verdicts import UNKNOWN, eventually, mac


@pytest.fixture
def second_site(harness_tmp):
    """Another network (namespaces) and a dnsmasq for it, not started."""
    problem = preflight.dhcp_problem()
    if problem:
        pytest.skip(problem)
    net = DhcpNetwork('pxfsite')
    hostsdir = harness_tmp / 'hostsdir-2'
    hostsdir.mkdir(mode=0o755)
    dm = DnsmasqInstance(net, hostsdir, harness_tmp / 'dnsmasq-2')
    try:
        yield net, dm
    finally:
        dm.stop()
        net.close()


def test_each_site_allows_only_its_own_shards_inspections(
        ironic, runner_factory, probe, dnsmasq_instance, second_site,
        harness_tmp):
    net_2, dnsmasq_2 = second_site
    nodes = {}
    for i, shard in enumerate(('rack-1', 'rack-1', 'rack-2', 'rack-2')):
        node = ironic.create_node('site-%d' % i)
        ironic.patch_node(node, shard=shard)
        ironic.create_port(node, mac(i))
        nodes[i] = node
    site_1 = runner_factory(options={
        'pxe_filter': {'shard': 'rack-1'}}).start()
    site_2 = PxefilterdRunner(harness_tmp / 'pxefilterd-site-2', ironic.url,
                              dnsmasq_2,
                              options={'pxe_filter': {'shard': 'rack-2'}})
    try:
        site_2.start()
        site_1.wait_ready()
        site_2.wait_ready()

        def probe_2(macs, **kwargs):
            return dhcp_probe.probe(net_2, list(macs), **kwargs)

        everyone = [mac(i) for i in range(4)] + [UNKNOWN]
        eventually(probe, allowed=[], denied=everyone)
        eventually(probe_2, allowed=[], denied=everyone)

        # rack-2 inspects node 2: only site 2 lets it (and unknown MACs)
        # boot; site 1 has no inspection of its own and denies everyone.
        ironic.inspect(nodes[2])
        eventually(probe_2, allowed=[mac(2), UNKNOWN],
                   denied=[mac(0), mac(1), mac(3)])
        eventually(probe, allowed=[], denied=everyone)

        # rack-1 inspects node 0 as well: each site its own.
        ironic.inspect(nodes[0])
        eventually(probe, allowed=[mac(0), UNKNOWN],
                   denied=[mac(1), mac(2), mac(3)])
        eventually(probe_2, allowed=[mac(2), UNKNOWN],
                   denied=[mac(0), mac(1), mac(3)])
        out = site_1.ctl('explain', mac(2))
        assert 'decision:  deny (rule out-of-scope)' in out, out
        assert "node in shard 'rack-2'" in out, out

        # The end of rack-2's inspection closes site 2 again, not site 1.
        ironic.abort(nodes[2])
        eventually(probe_2, allowed=[], denied=everyone)
        eventually(probe, allowed=[mac(0), UNKNOWN],
                   denied=[mac(1), mac(2), mac(3)])
        assert site_2.stop() == 0
        assert site_1.stop() == 0
    finally:
        site_2.close()
