"""A real in-band inspection, end to end, through the filter.

A qemu VM (TCG, SeaBIOS + iPXE) PXE-boots through dnsmasq, which pxefilterd
drives, into the inspection ramdisk: the Debian cloud kernel and a Debian 12
root with ironic-python-agent (:mod:`pxefilterd_harness.ramdisk`, built
once and cached).  The agent collects the inventory and posts it to a real
ironic (unmanaged inspection: ``require_managed_boot = false``, the
``agent`` inspect interface) through a relay in the VM's namespace
(:mod:`pxefilterd_harness.inspection`).  Ironic's inspection hooks run,
the node leaves ``inspect wait``, and the filter must close:

1. the inspected node's MAC is denied within 2 s of ironic's state change,
   and the VM's next PXE boot is ignored;
2. a second NIC, unknown before, becomes a port through ironic's ``ports``
   hook (``add_ports = all``) and is denied afterwards;
3. discovery: an unknown VM boots (pxefilterd's ``auto_discovery``), ironic
   enrols a node with its port (``[auto_discovery] enabled``), and the MAC
   is denied from then on;
4. the agent's callback is unreachable: ironic's inspection timeout fails
   the node and the MAC is denied.

One VM at a time; each flow costs one ramdisk boot (1-2 minutes under TCG)
and one denied boot (~6 s).  Skipped with the reason when no VM can boot or
the ramdisk can neither be found in the cache nor built here.
"""

from __future__ import annotations

import time

import pytest
from pxefilterd_harness import inspection, ramdisk, vm
from pxefilterd_harness.dnsmasq import DnsmasqInstance
from pxefilterd_harness.ironic import IronicError

#: Seconds from power-on to the agent's post: measured 1-2 minutes under
#: TCG on 2 busy cores; room for a loaded CI machine.
AGENT_TIMEOUT = 600.0
#: Seconds ironic may take from the agent's post to ``manageable``.
PROCESSING_TIMEOUT = 120.0
MAC_A = '52:54:00:1e:00:01'
MAC_B = '52:54:00:1e:00:02'
MAC_NEW = '52:54:00:1e:00:99'


@pytest.fixture(scope='module')
def ramdisk_files():
    """The cached inspection ramdisk, built first if its inputs changed
    (a few minutes, once)."""
    problem = vm.vm_problem('bios') or ramdisk.problem()
    if problem:
        pytest.skip('no inspection boot possible: %s' % problem)
    disk = ramdisk.ensure(say=print)
    print(disk.describe())
    return disk


@pytest.fixture
def ironic_options():
    """Keyword arguments for :class:`IronicService` (tests parametrize)."""
    return {}


@pytest.fixture
def agent_reachable():
    """Whether the agent's callback URL leads to ironic."""
    return True


@pytest.fixture
def ironic(ironic_factory, ironic_options, ramdisk_files):
    """Overrides conftest's: ironic with *ironic_options*, started (after
    the ramdisk exists: a cold build must not eat the test's timeouts)."""
    svc = ironic_factory(**ironic_options)
    svc.start()
    return svc


@pytest.fixture
def dhcp_network(harness_tmp):
    """Overrides conftest's: a :class:`VmNetwork` (bridge, taps)."""
    net = vm.VmNetwork(workdir=harness_tmp / 'vmnet',
                       timeout=inspection.NETNS_TIMEOUT)
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def site(dhcp_network, ramdisk_files, ironic, agent_reachable, harness_tmp):
    """Boot server, ironic relay and iPXE script in the VM's namespace."""
    s = inspection.InspectionSite(dhcp_network, ramdisk_files, ironic.port,
                                  harness_tmp / 'site',
                                  reachable=agent_reachable)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def dnsmasq_instance(dhcp_network, hostsdir, harness_tmp, site):
    """Overrides conftest's: dnsmasq that boots iPXE into the ramdisk."""
    dm = DnsmasqInstance(dhcp_network, hostsdir.path,
                         harness_tmp / 'dnsmasq',
                         extra_options=site.dnsmasq_options())
    try:
        yield dm
    finally:
        dm.stop()


@pytest.fixture
def agent_vm(dhcp_network, dnsmasq_instance, harness_tmp):
    """Callable ``(mac, extra_macs=()) -> InspectionVm`` (started); every
    VM is closed at teardown and its milestones and serial console's end
    printed (pytest shows them for a failed test)."""
    made = []

    def start(mac, extra_macs=()):
        machine = inspection.InspectionVm(
            dhcp_network, dnsmasq_instance, mac,
            harness_tmp / ('agent-%d' % len(made)), extra_macs=extra_macs)
        made.append(machine)
        return machine.start()

    yield start
    for machine in made:
        machine.close()
        print('%s milestones (s after power-on): %s'
              % (machine.mac, machine.events))
        print(machine.serial_text()[-5000:])


@pytest.fixture
def next_boot(dhcp_network, dnsmasq_instance, harness_tmp):
    """Callable ``(mac) -> Verdict``: one more PXE boot (iPXE), as the
    machine's next power-on."""
    def boot(mac):
        workdir = harness_tmp / ('next-%s' % mac.replace(':', ''))
        return vm.Vm(dhcp_network, dnsmasq_instance, mac, workdir).start() \
            .wait()
    return boot


def _denied_at(runner, mac, timeout):
    """When pxefilterd denied *mac* (its hostsdir entry's mtime)."""
    try:
        return inspection.wait_denied(runner.hostsdir, mac, timeout)
    except inspection.InspectionError as exc:
        pytest.fail('%s; pxefilterd log ends:\n%s'
                    % (exc, runner.log_text()[-3000:]))


def _inspect(machine, ironic, node):
    """Wait for the agent's post and ironic's ``manageable``."""
    machine.wait_for('posted', AGENT_TIMEOUT)
    ironic.wait_for_state(node, 'manageable', PROCESSING_TIMEOUT)


def test_inspection_completes_then_denied(ironic, runner_factory, agent_vm,
                                          next_boot, site):
    node = ironic.create_node('inspected')
    ironic.create_port(node, MAC_A)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(node)
    machine = agent_vm(MAC_A)
    power_on = time.time()
    _inspect(machine, ironic, node)
    machine.close()
    assert machine.events['offer'] < machine.events['posted']
    assert len(site.posts()) == 1
    inventory = ironic.request('GET', '/v1/nodes/%s/inventory' % node)
    macs = [i['mac_address'] for i in inventory['inventory']['interfaces']]
    assert macs == [MAC_A]
    changed = inspection.state_changed_at(ironic, node)
    denied = _denied_at(runner, MAC_A, 30)
    print('timeline, s after power-on: %s, manageable %.1f, denied %.1f '
          '(%.2f s after the state change)'
          % (', '.join('%s %.1f' % kv for kv in machine.events.items()),
             changed - power_on, denied - power_on, denied - changed))
    assert denied - changed <= 2.0
    verdict = next_boot(MAC_A)
    assert verdict.denied, verdict.describe()
    assert runner.stop() == 0


@pytest.mark.parametrize('ironic_options', [
    {'extra_conf': '[inspector]\nadd_ports = all\n'}])
def test_inspection_adds_port_then_denied(ironic, runner_factory, agent_vm,
                                          next_boot):
    node = ironic.create_node('two-nics')
    ironic.create_port(node, MAC_A)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(node)
    machine = agent_vm(MAC_A, extra_macs=(MAC_B,))
    _inspect(machine, ironic, node)
    machine.close()
    ports = ironic.request('GET', '/v1/nodes/%s/ports?fields=address'
                           % node)['ports']
    assert sorted(p['address'] for p in ports) == [MAC_A, MAC_B]
    _denied_at(runner, MAC_A, 30)
    _denied_at(runner, MAC_B, 30)
    verdict = next_boot(MAC_B)
    assert verdict.denied, verdict.describe()
    assert runner.stop() == 0


@pytest.mark.parametrize('ironic_options', [
    {'extra_conf': '[auto_discovery]\nenabled = true\n'
                   'driver = fake-hardware\n'}])
def test_discovery_enrols_then_denied(ironic, runner_factory, agent_vm,
                                      next_boot, site):
    runner = runner_factory(
        options={'pxe_filter': {'auto_discovery': True}}).start()
    runner.wait_ready()
    machine = agent_vm(MAC_NEW)
    machine.wait_for('posted', AGENT_TIMEOUT)
    machine.close()
    deadline = time.monotonic() + PROCESSING_TIMEOUT
    while not ironic.list_ports():
        assert time.monotonic() < deadline, 'no node enrolled'
        time.sleep(0.2)
    (port,) = ironic.list_ports()
    assert port['address'] == MAC_NEW
    node = ironic.node(port['node_uuid'])
    assert node['driver'] == 'fake-hardware'
    _denied_at(runner, MAC_NEW, 60)
    verdict = next_boot(MAC_NEW)
    assert verdict.denied, verdict.describe()
    assert runner.stop() == 0


@pytest.mark.parametrize('agent_reachable', [False])
@pytest.mark.parametrize('ironic_options', [
    {'inspect_wait_timeout': 60, 'check_provision_state_interval': 5}])
def test_agent_never_posts_timeout_then_denied(ironic, runner_factory,
                                               agent_vm, next_boot, site):
    node = ironic.create_node('silent')
    ironic.create_port(node, MAC_A)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(node)
    machine = agent_vm(MAC_A)
    # the agent runs and tries its callback, which leads nowhere
    machine.wait_for('posting', AGENT_TIMEOUT)
    # inspect_wait_timeout plus a check period, with room
    ironic.wait_for_state(node, 'inspect failed', 60 + 5 + 60)
    machine.close()
    assert site.posts() == []
    with pytest.raises(IronicError) as got:
        ironic.request('GET', '/v1/nodes/%s/inventory' % node)
    assert got.value.status == 404
    assert 'timeout' in ironic.node(node)['last_error'].lower()
    _denied_at(runner, MAC_A, 30)
    verdict = next_boot(MAC_A)
    assert verdict.denied, verdict.describe()
    assert runner.stop() == 0
