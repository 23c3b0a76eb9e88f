"""Every decision-changing ironic event, on a real ironic, judged by DHCP.

Each test makes one kind of change in a real ironic 39 while pxefilterd
serves a real dnsmasq, and waits until exactly the expected MACs get
offers.  The full port listing is pushed far out (``sync_period = 3600``)
wherever the event must be seen by the change feed; only deletions on
nodes that are not inspected rely on the listing, and that test says so.
How *fast* each event is applied is the benchmark's business
(``pxefilterd-bench --only events``); these tests only give it a
generous deadline.

Moving a port to another node (``PATCH /v1/ports/X`` of ``node_uuid``)
answers 500 on ironic 39 with SQLite (``KeyError: 'address'`` in its
``update_port``), so that event is covered against the fake only
(``tests/unit/test_feed.py``).
"""

from __future__ import annotations

import time


from pxefilterd import feed
from pxefilterd_harness.daemon import NotifySocket
from pxefilterd_harness.proxy import IronicProxy
from tests.integration.verdicts import UNKNOWN, eventually, offered

FEED_ONLY = {'sync_period': 3600}
DENY_UNKNOWN = dict(FEED_ONLY, deny_unknown_macs=True)
NEW = '52:54:00:dd:00:01'


def started(runner_factory, **pxe_filter):
    runner = runner_factory(options={'pxe_filter': pxe_filter}).start()
    runner.wait_ready()
    return runner


def test_node_deleted_mid_inspection_does_not_wedge_the_poll(
        enroll, ironic, runner_factory, probe):
    (a, a_macs, _), (b, b_macs, _), (c, c_macs, _) = enroll(3)
    runner = started(runner_factory, **DENY_UNKNOWN)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=b_macs + c_macs + [UNKNOWN])
    ironic.force_delete_node(a)
    # A's MACs are unknown now, and unknown MACs are denied ...
    eventually(probe, allowed=[], denied=a_macs + b_macs + [UNKNOWN])
    # ... and the poll still works: a later inspection is allowed.
    ironic.inspect(b)
    eventually(probe, allowed=b_macs, denied=a_macs + c_macs + [UNKNOWN])
    assert 'gone from ironic' in runner.log_text()
    assert runner.stop() == 0


def test_node_deleted_mid_inspection_unknown_policy_recomputed(
        enroll, ironic, runner_factory, probe):
    """With the default policy, unknown MACs are allowed only while some
    node is inspected: deleting the only one must deny them again."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = started(runner_factory, **FEED_ONLY)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    ironic.force_delete_node(a)
    eventually(probe, allowed=[], denied=a_macs + b_macs + [UNKNOWN])
    assert runner.stop() == 0


def test_every_page_of_1200_inspecting_nodes(ironic_factory, runner_factory,
                                            probe):
    """ironic caps a listing at [api] max_limit (1000): 1,200 nodes in
    inspect wait take two pages, and the last 200 must boot too."""
    big = ironic_factory()
    load = big.bulk_load(1200, 1, '52:54:02', provision_state='inspect wait')
    extra = big.bulk_load(50, 1, '52:54:03')
    big.start()
    runner = runner_factory(url=big.url,
                            options={'pxe_filter': DENY_UNKNOWN}).start()
    runner.wait_ready(timeout=90)
    inspected = sorted(load.ports)
    other = sorted(extra.ports)
    result = probe(inspected + other + [UNKNOWN], timeout=1.5, retries=3)
    missing = [m for m in inspected if not result[m].offer]
    leaked = [m for m in other + [UNKNOWN] if result[m].offer]
    assert not missing, '%d inspected MACs got no offer, e.g. %s' % (
        len(missing), missing[:3])
    assert not leaked
    assert runner.stop() == 0


def test_twenty_nodes_enter_and_leave_inspection_at_once(
        enroll, ironic, runner_factory, probe):
    nodes = enroll(22)
    runner = started(runner_factory, **DENY_UNKNOWN)
    batch, rest = nodes[:20], nodes[20:]
    for uuid, _, _ in batch:
        ironic.inspect(uuid, expect=None)
    allowed = [m for _, ms, _ in batch for m in ms]
    denied = [m for _, ms, _ in rest for m in ms] + [UNKNOWN]
    eventually(probe, allowed=allowed, denied=denied)
    for uuid, _, _ in batch:
        ironic.abort(uuid)
    eventually(probe, allowed=[], denied=allowed + denied)
    assert runner.stop() == 0


def test_port_created_on_an_inspected_node_is_allowed(
        enroll, ironic, runner_factory, probe):
    (a, a_macs, _), = enroll(1)
    runner = started(runner_factory, **DENY_UNKNOWN)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[NEW])
    ironic.create_port(a, NEW)
    eventually(probe, allowed=a_macs + [NEW], denied=[UNKNOWN])
    assert runner.stop() == 0


def test_port_created_on_another_node_during_inspection_is_denied(
        enroll, ironic, runner_factory, probe):
    """During an inspection unknown MACs are allowed; a MAC that becomes a
    port of a node that is not inspected must be denied at once."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = started(runner_factory, **FEED_ONLY)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [NEW, UNKNOWN], denied=b_macs)
    ironic.create_port(b, NEW)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs + [NEW])
    assert runner.stop() == 0


def test_address_changed_on_an_inspected_node(enroll, ironic, runner_factory,
                                              probe):
    (a, a_macs, a_ports), = enroll(1)
    runner = started(runner_factory, **DENY_UNKNOWN)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[NEW])
    ironic.patch_port(a_ports[0], address=NEW)
    # the old address is unknown now (denied), the new one is the node's
    eventually(probe, allowed=[NEW], denied=a_macs)
    assert runner.stop() == 0


def test_address_changed_on_another_node_during_inspection(
        enroll, ironic, runner_factory, probe):
    (a, a_macs, _), (b, b_macs, b_ports) = enroll(2)
    # A page of newer ports, so that B's port is not among those the
    # new-ports feed re-reads at every cycle: only the changed-ports feed
    # (sort_key=updated_at) can see its new address.
    for i in range(feed.FEED_PAGE):
        ironic.create_port(b, '52:54:00:dd:01:%02x' % i)
    runner = started(runner_factory, **FEED_ONLY)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [NEW], denied=b_macs)
    ironic.patch_port(b_ports[0], address=NEW)
    # B's old address is unknown (allowed during an inspection), the new
    # one is a port of a node that is not inspected (denied)
    eventually(probe, allowed=a_macs + b_macs, denied=[NEW])
    assert runner.stop() == 0


def test_port_deleted_from_an_inspected_node(enroll, ironic, runner_factory,
                                             probe):
    (a, a_macs, a_ports), = enroll(1, ports=2)
    runner = started(runner_factory, **DENY_UNKNOWN)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[UNKNOWN])
    ironic.delete_port(a_ports[0])
    eventually(probe, allowed=a_macs[1:], denied=a_macs[:1] + [UNKNOWN])
    assert runner.stop() == 0


def test_port_deleted_from_another_node_by_the_backstop_listing(
        enroll, ironic, runner_factory, probe):
    """Deletions leave no trace in any cheap listing: for a node that is
    not inspected (its MACs are denied, and unknown MACs may be allowed),
    the full listing finds them.  Here it runs every 2 s."""
    (a, a_macs, _), (b, b_macs, b_ports) = enroll(2)
    runner = started(runner_factory, sync_period=2)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=b_macs)
    ironic.delete_port(b_ports[0])
    eventually(probe, allowed=a_macs + b_macs, denied=[])
    assert runner.stop() == 0


def test_inspect_interface_changed_during_inspection(
        enroll, ironic, runner_factory, probe):
    (a, a_macs, _), = enroll(1)
    runner = started(runner_factory, **DENY_UNKNOWN)
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[UNKNOWN])
    # 'fake' inspection needs no PXE: not in supported_inspect_interfaces
    ironic.patch_node(a, inspect_interface='fake')
    eventually(probe, allowed=[], denied=a_macs + [UNKNOWN])
    assert runner.stop() == 0


def test_hanging_ironic_keeps_serving_and_pinging_and_exits_fast(
        enroll, ironic, runner_factory, probe, harness_tmp):
    """ironic accepts connections and never answers: the watchdog pings go
    on, dnsmasq keeps serving the last state, SIGTERM exits at once."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    with IronicProxy(('127.0.0.1', ironic.port)) as proxy:
        notify = NotifySocket(harness_tmp / 'notify.sock')
        try:
            runner = runner_factory(url=proxy.url, options={
                'pxe_filter': FEED_ONLY,
                'ironic': {'timeout': 10, 'api_retries': 3}}).start(notify)
            runner.wait_ready()
            ironic.inspect(a)
            eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
            proxy.hang = True
            hung = time.monotonic()
            # longer than one request timeout plus the retries' backoff
            time.sleep(15)
            eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs,
                       timeout=5)
            pings = [t for t in notify.times('WATCHDOG=1') if t > hung]
            gaps = [b - a for a, b in zip([hung] + pings, pings)]
            assert pings and max(gaps) < 6.0, gaps
            assert runner.proc.poll() is None
            sent = time.monotonic()
            assert runner.stop(timeout=30) == 0
            took = time.monotonic() - sent
            print("exit %.2f s after SIGTERM while ironic hangs" % took)
            assert took < 2.0, runner.log_text()[-2000:]
        finally:
            notify.close()
    assert offered(probe, a_macs) == set()   # stopped with the daemon

