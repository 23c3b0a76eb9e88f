"""Shared fixtures for integration tests against real services.

Every fixture cleans up in ``finally`` (processes by PID, namespaces, temp
dirs), also when the test fails.  Fixtures skip the test with a clear reason
when the machine cannot run it: not root, ``ip``/``dnsmasq``/``dhclient``
missing, or no ironic venv (``PXEFILTERD_IRONIC_VENV``, default
``/opt/ironic-venv``).

The harness lives in :mod:`pxefilterd_harness` (``harness/``, a
development-only distribution) so that the demo and the benchmark use the
very same code as the tests.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pxefilterd_harness import dhcp6_probe, dhcp_probe, preflight
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dnsmasq import DnsmasqInstance, HostsDirWriter
from pxefilterd_harness.ironic import IronicService
from pxefilterd_harness.netns import DhcpNetwork
from tests.integration import verdicts


#: Wall seconds each file took on the CI machine kind (2 cores, two files at
#: a time).  ``tox -e integration`` runs with ``--dist loadfile
#: --no-loadscope-reorder``, so files are handed to the two workers in the
#: order below: longest first, so that both workers finish together instead
#: of one starting a long file while the other is nearly done.  A stale or
#: missing number only costs wall time, never a result.
FILE_SECONDS = {
    "test_inspection.py": 330,
    "test_dnsmasq_liveness.py": 280,
    "test_ironic_events.py": 245,
    "test_pxefilterd.py": 180,
    "test_clients.py": 150,
    "test_keystone.py": 140,
    "test_systemd.py": 120,
    "test_vm_boot.py": 110,
    "test_harness.py": 95,
    "test_differential.py": 95,
    "test_containers.py": 90,
    "test_operator.py": 85,
    "test_sites.py": 75,
    "test_dnsmasq_clients.py": 60,
    "test_supervision_default.py": 45,
    "test_records.py": 30,
    "test_fake_contract.py": 25,
}


def pytest_collection_modifyitems(items):
    """Order the files longest first (stable within a file)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 60))


@pytest.fixture
def harness_tmp():
    """A fresh 0755 temp dir under /tmp, removed afterwards.

    Unlike pytest's ``tmp_path`` (0700 parents), dnsmasq can read files
    below it after dropping root to ``nobody``.
    """
    path = tempfile.mkdtemp(prefix="pxf-it-")
    os.chmod(path, 0o755)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ironic_factory(harness_tmp):
    """Callable ``(**kwargs) -> IronicService`` (not started; prepared).

    Each call gets its own workdir, DB and reserved port.  Every service is
    closed (stopped by PID) at teardown.  Skips without an ironic venv.
    """
    problem = preflight.ironic_problem()
    if problem:
        pytest.skip(problem)
    services: list[IronicService] = []
    counter = itertools.count()

    def make(**kwargs) -> IronicService:
        svc = IronicService(harness_tmp / f"ironic-{next(counter)}", **kwargs)
        services.append(svc)
        svc.prepare()
        return svc

    try:
        yield make
    finally:
        for svc in services:
            svc.close()


@pytest.fixture
def ironic(ironic_factory):
    """A started :class:`IronicService` (empty DB), stopped at teardown."""
    svc = ironic_factory()
    svc.start()
    return svc


@pytest.fixture
def dhcp_network():
    """A :class:`DhcpNetwork` (server + client netns), removed at teardown.

    Skips unless root with ``ip``, ``dnsmasq`` and ``dhclient`` available.
    """
    problem = preflight.dhcp_problem(need_dhclient=True)
    if problem:
        pytest.skip(problem)
    net = DhcpNetwork()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def hostsdir(harness_tmp):
    """A :class:`HostsDirWriter` on an empty 0755 ``hostsdir``."""
    return HostsDirWriter(harness_tmp / "hostsdir")


@pytest.fixture
def dnsmasq_instance(dhcp_network, hostsdir, harness_tmp):
    """A configured, NOT started :class:`DnsmasqInstance` on ``hostsdir``.

    Whoever starts it (test or daemon via ``start_argv()``), teardown stops
    it through the pid file and checks it is gone.
    """
    dm = DnsmasqInstance(dhcp_network, hostsdir.path, harness_tmp / "dnsmasq")
    try:
        yield dm
    finally:
        dm.stop()


#: The dnsmasq configuration pxefilterd ships (its fail-closed settings).
SHIPPED_CONF = (Path(__file__).resolve().parents[2]
                / 'etc/pxefilterd/dnsmasq.conf')


@pytest.fixture
def v6_dnsmasq(dhcp_network, hostsdir, harness_tmp):
    """A dnsmasq with a DHCPv6 range and the shipped fail-closed setting
    (its dhcp-ignore lines, read from etc/pxefilterd/dnsmasq.conf): DHCPv6
    clients that match no record -- those whose MAC dnsmasq cannot learn --
    are ignored."""
    shipped = tuple(line for line in SHIPPED_CONF.read_text().splitlines()
                    if line.startswith('dhcp-ignore='))
    assert shipped
    dhcp6_probe.setup_ipv6(dhcp_network)
    dm = DnsmasqInstance(dhcp_network, hostsdir.path,
                         harness_tmp / 'dnsmasq-v6',
                         extra_options=dhcp6_probe.dnsmasq_options()
                         + shipped)
    try:
        yield dm
    finally:
        dm.stop()


@pytest.fixture
def dnsmasq(dnsmasq_instance):
    """The ``dnsmasq_instance``, started (daemonized) and running."""
    dnsmasq_instance.start()
    return dnsmasq_instance


@pytest.fixture
def probe(dhcp_network):
    """Callable ``(macs, **kw) -> {mac: Offer}`` probing in ``dhcp_network``.

    Keyword arguments go to :func:`pxefilterd_harness.dhcp_probe.probe`
    (timeout, retries, rate, stats).
    """
    def run(macs, **kwargs):
        return dhcp_probe.probe(dhcp_network, list(macs), **kwargs)

    return run


@pytest.fixture
def enroll(ironic):
    """Callable ``(count, ports=1, prefix='node')`` enrolling manageable
    nodes through the API; returns ``[(uuid, macs, port_uuids)]``."""
    def make(count, ports=1, prefix='node'):
        nodes = []
        for i in range(count):
            uuid = ironic.create_node('%s-%d' % (prefix, i))
            macs = [verdicts.mac(i, p) for p in range(ports)]
            port_ids = [ironic.create_port(uuid, m) for m in macs]
            nodes.append((uuid, macs, port_ids))
        return nodes
    return make


@pytest.fixture
def runner_factory(request, harness_tmp, dnsmasq_instance):
    """Callable ``(options=None, reload=True, url=None)`` returning a
    :class:`PxefilterdRunner` (not started) for ``dnsmasq_instance``;
    without *url* it talks to the ``ironic`` fixture.  Killed at teardown."""
    made = []

    def make(options=None, reload=True, url=None):
        if url is None:
            url = request.getfixturevalue('ironic').url
        r = PxefilterdRunner(harness_tmp / ('pxefilterd-%d' % len(made)),
                             url, dnsmasq_instance,
                             options=options, reload=reload)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
