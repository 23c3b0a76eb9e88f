"""Real PXE firmware against real ironic, pxefilterd and dnsmasq.

The DHCP clients here are qemu VMs (TCG): SeaBIOS with the iPXE option ROM
of a virtio NIC, UEFI (OVMF) with the iPXE EFI ROM, or UEFI with EDK2's own
PXE client chain-loading ipxe.efi, each with a chosen MAC, on a bridge in
the server namespace (:class:`pxefilterd_harness.vm.VmNetwork`).  dnsmasq
(started by pxefilterd) serves them an iPXE script by TFTP that prints a
marker with the NIC's MAC and reboots; qemu then exits.

- **booted**: the marker with the VM's MAC is on its serial console: the
  firmware got an offer, loaded the script and ran it;
- **denied**: dnsmasq logged three of the VM's DHCPDISCOVERs as
  ``ignored`` and made it no offer (BIOS: 5.4 s after qemu starts).

Skipped with the reason when qemu or the firmware is missing (Debian
packages qemu-system-x86 seabios ipxe-qemu ovmf; ipxe for the EDK2 chain).

A VM that should be denied but is offered an address goes on to boot (the
verdict is then "booted"), and one that should boot but is ignored gets the
"denied" verdict: every assertion can fail either way.  VMs that belong to
one scenario boot in parallel (two at a time).
"""

from __future__ import annotations

import itertools

import pytest
from pxefilterd_harness import vm
from pxefilterd_harness.dnsmasq import DnsmasqInstance
from tests.integration.verdicts import UNKNOWN


@pytest.fixture(autouse=True)
def _need_vms():
    """Skip (before ironic starts) when no VM can boot here."""
    problem = vm.vm_problem('bios')
    if problem:
        pytest.skip('no VM boot possible: %s' % problem)


@pytest.fixture
def dhcp_network(harness_tmp):
    """Overrides conftest's: a :class:`VmNetwork` (server veth on a bridge
    with taps for the VMs, RA responder), removed at teardown."""
    net = vm.VmNetwork(workdir=harness_tmp / 'vmnet')
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def dnsmasq_instance(dhcp_network, hostsdir, harness_tmp):
    """Overrides conftest's: the same dnsmasq plus TFTP and the boot
    options real firmware needs (``runner_factory`` uses this one)."""
    tftp = vm.prepare_tftp_root(harness_tmp / 'tftp')
    dm = DnsmasqInstance(dhcp_network, hostsdir.path,
                         harness_tmp / 'dnsmasq',
                         extra_options=vm.boot_options(tftp))
    try:
        yield dm
    finally:
        dm.stop()


@pytest.fixture
def boot(dhcp_network, dnsmasq_instance, harness_tmp):
    """Callable ``(macs, firmware='bios') -> {mac: Verdict}``: one VM per
    MAC, two at a time; every VM is killed by the time it returns."""
    counter = itertools.count()

    def run(macs, firmware='bios'):
        workdir = harness_tmp / ('boot-%d' % next(counter))
        return vm.boot_many(dhcp_network, dnsmasq_instance, macs, workdir,
                            firmware=firmware, parallel=2)

    return run


def _expect(verdicts, booted=(), denied=()):
    """Assert each MAC's verdict, with what the VM did in the message."""
    problems = []
    for mac in booted:
        if not verdicts[mac].booted:
            problems.append('%s should boot: %s'
                            % (mac, verdicts[mac].describe()))
    for mac in denied:
        if not verdicts[mac].denied:
            problems.append('%s should be denied: %s'
                            % (mac, verdicts[mac].describe()))
    assert not problems, '\n'.join(problems)


def test_inspected_node_and_unknown_boot_other_node_denied(
        enroll, ironic, runner_factory, boot):
    (a, a_macs, _), (_b, b_macs, _) = enroll(2)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    # the VMs power on right away, as ironic would power on node A; an
    # unknown MAC boots by default while a node is under inspection
    got = boot([a_macs[0], b_macs[0], UNKNOWN])
    _expect(got, booted=[a_macs[0], UNKNOWN], denied=[b_macs[0]])
    assert got[a_macs[0]].platform == 'pcbios'
    assert got[a_macs[0]].ip.startswith('198.51.100.')
    assert runner.stop() == 0


def test_abort_then_next_boot_denied(enroll, ironic, runner_factory, boot,
                                     dnsmasq_instance):
    (a, a_macs, _), = enroll(1)
    mac = a_macs[0]
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    _expect(boot([mac]), booted=[mac])
    entry = runner.hostsdir / mac
    read_line = 'read %s' % entry
    reads = dnsmasq_instance.log_text().count(read_line)
    ironic.abort(a)
    # The next boot comes once the deny is in dnsmasq (the file says
    # ignore and dnsmasq has read it since): a firmware boot straight
    # after the abort would race pxefilterd's poll (the boot benchmark
    # measures that race).
    assert dnsmasq_instance.wait_for_log(read_line, timeout=15,
                                         count=reads + 1)
    assert entry.read_text() == mac + ',ignore\n'
    _expect(boot([mac]), denied=[mac])
    assert runner.stop() == 0


def test_deny_unknown_macs_unknown_vm_denied(enroll, ironic, runner_factory,
                                             boot):
    (a, a_macs, _), = enroll(1)
    runner = runner_factory(
        options={'pxe_filter': {'deny_unknown_macs': True}}).start()
    runner.wait_ready()
    ironic.inspect(a)
    got = boot([a_macs[0], UNKNOWN])
    _expect(got, booted=[a_macs[0]], denied=[UNKNOWN])
    assert runner.stop() == 0


def test_uefi(enroll, ironic, runner_factory, dhcp_network,
              dnsmasq_instance, harness_tmp):
    """UEFI (OVMF, q35): an inspected node boots through the iPXE EFI ROM
    and a node not inspected is denied.  With ipxe.efi installed (Debian
    package ipxe), a third node, inspected too, boots meanwhile the way a
    UEFI server without iPXE does: EDK2's own PXE client gets ipxe.efi by
    TFTP, iPXE asks again (now tagged ipxe) and runs the script."""
    problem = vm.vm_problem('uefi')
    if problem:
        pytest.skip('no UEFI VM boot possible: %s' % problem)
    chain = vm.vm_problem('uefi', rom=False) is None
    (a, a_macs, _), (_b, b_macs, _), (c, c_macs, _) = enroll(3)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)

    def machine(mac, rom=True):
        return vm.Vm(dhcp_network, dnsmasq_instance, mac,
                     harness_tmp / ('vm-' + mac.replace(':', '')),
                     firmware='uefi', rom=rom)

    vms = [machine(a_macs[0]), machine(b_macs[0])]
    if chain:
        ironic.inspect(c)
        # the slowest boot (~18 s) first; the two others one after the
        # other beside it: at most two VMs at once on 2 cores
        vms.insert(0, machine(c_macs[0], rom=False))
    got = vm.run_vms(vms, parallel=2)
    _expect(got, booted=[a_macs[0]], denied=[b_macs[0]])
    assert got[a_macs[0]].platform == 'efi'
    if chain:
        _expect(got, booted=[c_macs[0]])
        # one offer to EDK2's PXE client, one to the chain-loaded iPXE
        assert got[c_macs[0]].offers >= 2, got[c_macs[0]].describe()
        assert got[c_macs[0]].platform == 'efi'
    assert runner.stop() == 0
