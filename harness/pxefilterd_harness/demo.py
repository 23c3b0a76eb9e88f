"""The demo: a real ironic, dnsmasq in a network namespace and pxefilterd.

Enrolls three nodes, then shows which MACs get a PXE offer from dnsmasq
(real DHCPDISCOVERs from a client namespace) before, during and after the
in-band inspection of one node, and boots real machines through the
filter: qemu VMs with SeaBIOS and the iPXE ROM (the inspected node's VM
boots the test script, another node's VM is ignored).  Everything it
starts is stopped and removed at the end, also on failure or Ctrl-C.

Run as root: ``python -m pxefilterd_harness.demo`` (``tools/demo.sh``
installs what it needs first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pxefilterd_harness import dhcp_probe
from pxefilterd_harness import preflight
from pxefilterd_harness import vm
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dnsmasq import DnsmasqInstance
from pxefilterd_harness.ironic import IronicService
from pxefilterd_harness.netns import DhcpNetwork

NODES = {'node-1': '52:54:00:00:01:10', 'node-2': '52:54:00:00:02:10',
         'node-3': '52:54:00:00:03:10'}
UNKNOWN = '52:54:00:ee:ee:01'


def say(msg):
    print('[demo] %s' % msg, flush=True)


def answers(network, macs):
    result = dhcp_probe.probe(network, list(macs), timeout=1.0, retries=2)
    return {m: ('PXE offer (%s)' % result[m].file) if result[m].offer
            else 'no offer' for m in macs}


def wait_answer(network, mac, want_offer, timeout=15.0):
    """Probe ``mac`` until its answer is ``want_offer``; return seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        got = dhcp_probe.probe(network, [mac], timeout=0.2, retries=0)[mac]
        if got.offer == want_offer:
            return time.monotonic() - started
    raise RuntimeError('%s: no change within %.0f s' % (mac, timeout))


def boot_vms(network, dnsmasq, workdir, expected):
    """Boot a VM (SeaBIOS + iPXE ROM) for each node of ``expected`` (name
    -> should boot), two at a time; say what happened and return whether
    every one did as expected."""
    names = {NODES[name]: name for name in expected}
    say('booting VMs (qemu, SeaBIOS + iPXE, PXE over the bridge) for %s'
        % ', '.join(expected))
    verdicts = vm.boot_many(network, dnsmasq, list(names), workdir / 'vms')
    ok = True
    for mac, verdict in verdicts.items():
        name = names[mac]
        say('%s VM (%s): %s' % (name, mac, verdict.describe()))
        if verdict.booted:
            marker = [line for line in verdict.serial_tail.splitlines()
                      if vm.MARKER in line]
            say('%s serial console: %s' % (name, marker[-1].strip()
                                            if marker else '?'))
        ok = ok and verdict.booted == expected[name]
    return ok


def table(columns):
    rows = [('node-1', NODES['node-1']), ('node-2', NODES['node-2']),
            ('node-3', NODES['node-3']), ('(unknown)', UNKNOWN)]
    head = '%-10s %-18s' % ('machine', 'MAC') + ''.join(
        ' %-30s' % title for title, _ in columns)
    print(head)
    print('-' * len(head))
    for name, mac in rows:
        print('%-10s %-18s' % (name, mac) + ''.join(
            ' %-30s' % answer[mac] for _, answer in columns))


def run(workdir):
    say('starting a real ironic (PyPI ironic, SQLite, noauth, '
        'fake-hardware) on 127.0.0.1')
    ironic = IronicService(workdir / 'ironic')
    network = None
    dnsmasq = None
    runner = None
    try:
        ironic.start()
        uuids = {}
        for name, mac in NODES.items():
            uuids[name] = ironic.create_node(name)
            ironic.create_port(uuids[name], mac)
        say('ironic %s: enrolled %s' % (ironic.url, ', '.join(
            '%s (%s)' % kv for kv in NODES.items())))
        vm_problem = vm.vm_problem()
        if vm_problem is None:
            network = vm.VmNetwork('pxfdemo', workdir=workdir / 'vmnet')
            boot = vm.boot_options(vm.prepare_tftp_root(workdir / 'tftp'))
        else:
            say('no virtual machines in this run: %s' % vm_problem)
            network, boot = DhcpNetwork('pxfdemo'), ()
        hostsdir = workdir / 'hostsdir'
        hostsdir.mkdir(mode=0o755)
        dnsmasq = DnsmasqInstance(network, hostsdir, workdir / 'dnsmasq',
                                  extra_options=boot)
        say('network namespaces %s (dnsmasq, 198.51.100.1/24) and %s '
            '(DHCP clients)' % (network.server_ns, network.client_ns))
        runner = PxefilterdRunner(workdir / 'pxefilterd', ironic.url, dnsmasq)
        runner.start()
        runner.wait_ready()
        say('pxefilterd ready (pid %d); it started dnsmasq (pid %d) through '
            'pxefilterd-rootwrap' % (runner.pid, dnsmasq.pid()))
        say('hostsdir %s: %s' % (hostsdir, ', '.join(
            '%s=%r' % (n, (hostsdir / n).read_text())
            for n in sorted(os.listdir(hostsdir)))))
        all_macs = list(NODES.values()) + [UNKNOWN]
        before = answers(network, all_macs)

        say('baremetal node inspect node-1 (inspect interface "agent")')
        ironic.inspect(uuids['node-1'])
        allowed_after = wait_answer(network, NODES['node-1'], True)
        say('node-1 got its first PXE offer %.2f s after ironic reported '
            '"inspect wait"' % allowed_after)
        during = answers(network, all_macs)
        say('pxefilterd-ctl explain %s (asks the running daemon):'
            % NODES['node-1'])
        print(runner.ctl('explain', NODES['node-1']), end='', flush=True)
        booted = vm_problem is not None or boot_vms(
            network, dnsmasq, workdir, {'node-1': True, 'node-2': False})

        say('baremetal node abort node-1')
        ironic.abort(uuids['node-1'])
        denied_after = wait_answer(network, NODES['node-1'], False)
        say('node-1 denied again %.2f s after the abort' % denied_after)
        after = answers(network, all_macs)
        booted = booted and (vm_problem is not None or boot_vms(
            network, dnsmasq, workdir / 'after', {'node-1': False}))
        print()
        table([('before inspection', before),
               ('node-1 inspecting', during),
               ('after abort', after)])
        print('(unknown) is a MAC ironic does not know. It gets an offer '
              'while node-1 is inspected: the default unknown-MAC policy lets '
              'such MACs boot while any node is under inspection, so that a '
              'machine whose ports are not enrolled yet can boot the '
              'inspection ramdisk ([pxe_filter] deny_unknown_macs = true '
              'denies them; "pxefilterd-ctl explain unknown" says which rule '
              'applies).')
        print()
        ok = (booted and set(before.values()) == {'no offer'}
              and during[NODES['node-1']] != 'no offer'
              and during[UNKNOWN] != 'no offer'
              and during[NODES['node-2']] == 'no offer'
              and set(after.values()) == {'no offer'})
        code = runner.stop()
        say('pxefilterd stopped (exit status %d); dnsmasq running: %s'
            % (code, dnsmasq.is_running()))
        return 0 if ok and code == 0 else 1
    finally:
        if runner is not None:
            runner.close()
        if dnsmasq is not None:
            dnsmasq.stop()
        if network is not None:
            network.close()
        ironic.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory (logs) afterwards')
    parser.add_argument('--inspection', action='store_true',
                        help='the full flow instead: a VM boots the '
                             'ironic-python-agent ramdisk, the inventory '
                             'is posted, the filter closes (minutes; see '
                             'pxefilterd_harness.demo_inspection)')
    args = parser.parse_args(argv)
    if args.inspection:
        from pxefilterd_harness import demo_inspection
        return demo_inspection.main(['--keep'] if args.keep else [])
    for problem in (preflight.dhcp_problem(), preflight.ironic_problem()):
        if problem:
            print('demo: cannot run here: %s' % problem, file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix='pxefilterd-demo-'))
    os.chmod(workdir, 0o755)
    try:
        code = run(workdir)
    except KeyboardInterrupt:
        say('interrupted; everything cleaned up')
        code = 130
    except Exception as exc:
        say('FAILED: %s (logs in %s)' % (exc, workdir))
        args.keep = True
        code = 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say('done: %s' % ('everything behaved as expected' if code == 0
                      else 'see above'))
    return code


if __name__ == '__main__':
    sys.exit(main())
