"""The full-flow demo: a real in-band inspection through the filter.

A node is enrolled in a real ironic and inspected; its machine, a qemu VM
(TCG), PXE-boots through dnsmasq, which pxefilterd drives, into the
ironic-python-agent ramdisk (built once and cached: a few minutes the first
time); the agent posts its inventory; ironic moves the node to
``manageable``; pxefilterd closes the filter; the machine's next PXE boot
is ignored.  About two minutes with the ramdisk cached.  Everything it
starts is stopped and removed at the end, also on failure or Ctrl-C.

Run as root: ``python -m pxefilterd_harness.demo_inspection``, or
``tools/demo.sh --inspection`` (installs what it needs first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pxefilterd_harness import inspection, preflight, ramdisk, vm

MAC = '52:54:00:00:01:10'
STEPS = (('offer', 'DHCP offer through the filter (iPXE)'),
         ('kernel', 'kernel and initramfs loaded over HTTP, kernel running'),
         ('agent-start', 'ironic-python-agent started'),
         ('posting', 'the agent posts its inventory to ironic'))


def say(msg):
    print('[demo] %s' % msg, flush=True)


def _follow(machine, timeout):
    """Say each milestone of *machine*'s boot as it comes; return once the
    agent has posted (raises :class:`~.inspection.InspectionError` with the
    serial console's end if it does not within *timeout* s)."""
    said = set()
    while True:
        verdict = machine.watch()
        for key, text in STEPS:
            if key in machine.events and key not in said:
                said.add(key)
                say('  %5.1f s  %s' % (machine.events[key], text))
        if 'posted' in machine.events:
            return
        if verdict is not None or machine.elapsed() > timeout:
            machine.wait_for('posted', 0)
        time.sleep(0.2)


def run(workdir):
    disk = ramdisk.ensure(say=say)
    say(disk.describe())
    with inspection.stack(workdir, disk, ready_timeout=60) as st:
        net, ironic, dm, runner = st.net, st.ironic, st.dnsmasq, st.runner
        say('ironic is up at %s (unmanaged inspection, agent interface)'
            % ironic.url)
        say('pxefilterd is ready; dnsmasq serves the bridge')
        node = ironic.create_node('node-1')
        ironic.create_port(node, MAC)
        ironic.inspect(node)
        say('node-1 (%s): inspect -> inspect wait; powering its machine on'
            % MAC)
        machine = inspection.InspectionVm(net, dm, MAC, workdir / 'vm')
        machine.start()
        power_on = time.time()
        try:
            _follow(machine, 600)
            ironic.wait_for_state(node, 'manageable', 120)
        finally:
            machine.close()
        changed = inspection.state_changed_at(ironic, node)
        say('  %5.1f s  ironic: node-1 is manageable' % (changed - power_on))
        data = ironic.request('GET', '/v1/nodes/%s/inventory' % node)
        inv = data['inventory']
        say('           inventory: %s CPU(s) %s, %d MiB, disks %s, NICs %s'
            % (inv['cpu'].get('count'), inv['cpu'].get('architecture'),
               inv['memory'].get('physical_mb') or 0,
               [d['name'] for d in inv.get('disks', [])],
               [i['mac_address'] for i in inv['interfaces']]))
        denied = inspection.wait_denied(runner.hostsdir, MAC, 30)
        say('  %5.1f s  pxefilterd: %s denied, %.2f s after the state '
            'change (hostsdir entry "%s,ignore")'
            % (denied - power_on, MAC, denied - changed, MAC))
        say('powering the machine on again')
        verdict = vm.Vm(net, dm, MAC, workdir / 'next').start().wait()
        say('next PXE boot of node-1: %s' % verdict.describe())
        if runner.stop() != 0:
            raise RuntimeError('pxefilterd did not exit cleanly')
        return verdict.denied


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory (logs, serial console)')
    args = parser.parse_args(argv)
    problem = (preflight.dhcp_problem() or preflight.ironic_problem()
               or vm.vm_problem('bios') or ramdisk.problem())
    if problem:
        say('cannot run here: %s' % problem)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix='pxf-demo-inspection-'))
    os.chmod(workdir, 0o755)
    try:
        code = 0 if run(workdir) else 1
        if code:
            say('FAILED: the next boot was not ignored')
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
    if code == 0:
        say('done: the filter closed behind the inspection')
    return code


if __name__ == '__main__':
    sys.exit(main())
