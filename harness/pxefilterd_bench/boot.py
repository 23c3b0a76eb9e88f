"""Scenario 10: real PXE firmware.  qemu VMs (TCG) with SeaBIOS or UEFI
(OVMF) and the iPXE ROM of a virtio NIC boot from the real dnsmasq that the
real pxefilterd filters for a real ironic (a bulk-loaded fixture; each VM
has the MAC of one of its ports).  See :mod:`pxefilterd_harness.vm`.

For each of ``count`` nodes:

- **allowed boot**: after a random pause (0-1 s, so that the calls do not
  lock onto the phase of the daemon's 1-s poll), the benchmark calls
  ``inspect`` and powers the VM on as soon as the call returns, as ironic
  would; the time runs from the call to the boot marker on the VM's serial
  console (DHCP, TFTP and the iPXE script done).  The firmware's own share
  is reported too (qemu start -> first DISCOVER, qemu start -> marker), and
  the boots whose first DISCOVER dnsmasq still ignored: the filter was
  later than the firmware and cost the boot one DHCP retry (~1 s or more).
- **denied boot** (the first ``denied`` nodes): once the node is in
  ``inspect wait``, ``abort`` and power the VM on again at once; the time
  runs to the denied verdict (three DISCOVERs ignored, no offer).  A VM that
  boots instead is a leak: the deny was not in place when the firmware
  asked.

VMs run one at a time, so the figures are not disturbed by each other.
"""

import random
import time

from pxefilterd_bench import env
from pxefilterd_bench import stats

SCENARIO_BOOT = '10 real firmware boots (qemu, iPXE, real daemon)'
#: Time from the inspect call to the boot marker: the BIOS firmware itself
#: needs ~2.4 s (qemu start -> marker) when nothing waits for the filter.
BOOT_TARGETS = {'bios': ('<=', 4.0), 'uefi': ('<=', 12.0)}


def _vm(e, mac, root, firmware):
    from pxefilterd_harness import vm
    return vm.Vm(e.net, e.dm, mac, root / ('vm-%s' % mac.replace(':', '')),
                 firmware=firmware)


def allowed_boot(ironic_svc, e, node, mac, workdir, firmware):
    """Inspect ``node`` and power its VM on at once; return the timings."""
    call = time.monotonic()
    ironic_svc.set_provision_state(node, 'inspect')
    returned = time.monotonic()
    machine = _vm(e, mac, workdir, firmware)
    try:
        machine.start()
        verdict = machine.wait()
    finally:
        machine.close()
    result = {'node': node, 'mac': mac, 'verdict': verdict.kind,
              'inspect_call': returned - call,
              'discovers': verdict.discovers, 'ignored': verdict.ignored,
              'qemu_to_first_discover': verdict.first_discover}
    if verdict.booted:
        result.update(
            call_to_booted=machine.started + verdict.seconds - call,
            qemu_to_booted=verdict.seconds,
            waited_for_filter=verdict.ignored > 0)
    else:
        result['problem'] = verdict.describe()
    return result


def denied_boot(ironic_svc, e, node, mac, workdir, firmware):
    """Abort ``node`` (in inspect wait) and power its VM on at once."""
    ironic_svc.wait_for_state(node, 'inspect wait')
    call = time.monotonic()
    ironic_svc.set_provision_state(node, 'abort')
    machine = _vm(e, mac, workdir, firmware)
    try:
        machine.start()
        verdict = machine.wait()
    finally:
        machine.close()
    result = {'node': node, 'mac': mac, 'verdict': verdict.kind,
              'discovers': verdict.discovers, 'ignored': verdict.ignored,
              'leak': verdict.booted}
    if verdict.denied:
        result.update(call_to_denied=machine.started + verdict.seconds
                      - call, qemu_to_denied=verdict.seconds)
    else:
        result['problem'] = verdict.describe()
    return result


def run_boot(report, size, root, fixtures, firmware, count, denied):
    """Boot ``count`` VMs after ``inspect``, ``denied`` of them again after
    ``abort``; add the rows to ``report``."""
    from pxefilterd_harness.daemon import PxefilterdRunner
    label = '%s, %s ports, %d boots' % (firmware.upper(),
                                        env.fmt_size(size), count)
    results, refusals = [], []
    name = 'boot-%s-%d' % (firmware, size)
    with fixtures.started(size) as (ironic_svc, load), \
            env.DhcpEnv(root, name, log_dhcp=True, vms=True) as e:
        runner = PxefilterdRunner(root / ('daemon-' + name), ironic_svc.url,
                                  e.dm)
        try:
            runner.start()
            runner.wait_ready(timeout=900)
            env.wait_idle(e.dm.pid())
            by_node = {}
            for mac, node in sorted(load.ports.items()):
                by_node.setdefault(node, mac)
            nodes = load.nodes
            step = max(1, len(nodes) // count)
            rng = random.Random(size)
            vms = e.root / 'vms'
            for i in range(count):
                node = nodes[(i * step) % len(nodes)]
                mac = by_node[node]
                time.sleep(rng.uniform(0, 1.0))
                res = allowed_boot(ironic_svc, e, node, mac, vms, firmware)
                results.append(res)
                if i < denied:
                    time.sleep(rng.uniform(0, 1.0))
                    refusal = denied_boot(ironic_svc, e, node, mac, vms,
                                          firmware)
                    refusals.append(refusal)
                else:
                    ironic_svc.wait_for_state(node, 'inspect wait')
                    ironic_svc.abort(node)
                env.progress('boot %s: #%d %s, %s', label, i + 1,
                             _fmt(res, 'call_to_booted'),
                             _fmt(refusals[-1], 'call_to_denied')
                             if i < denied else 'not re-booted')
            code = runner.stop()
            if code != 0:
                raise RuntimeError('pxefilterd exited %s' % code)
        finally:
            runner.close()
    report.detail('boot-%s-%d' % (firmware, size),
                  {'boots': results, 'denied': refusals})
    add_rows(report, label, firmware, results, refusals)


def add_rows(report, label, firmware, results, refusals):
    """The table rows of one run (pure)."""
    add = report.add
    rows = (('call_to_booted', 'inspect call -> boot marker',
             BOOT_TARGETS.get(firmware)),
            ('qemu_to_booted', 'qemu start -> boot marker (firmware)', None),
            ('qemu_to_first_discover', 'qemu start -> first DISCOVER', None),
            ('inspect_call', 'inspect API call', None))
    for key, metric, target in rows:
        values = [r[key] for r in results if r.get(key) is not None]
        s = stats.summary(values)
        add(SCENARIO_BOOT, label, metric + ' p50', s['p50'], 's',
            note='n=%d' % s['n'])
        add(SCENARIO_BOOT, label, metric + ' p95', s['p95'], 's',
            target=target)
        if key == 'call_to_booted':
            add(SCENARIO_BOOT, label, metric + ' max', s['max'], 's')
    failed = [r for r in results if r['verdict'] != 'booted']
    add(SCENARIO_BOOT, label, 'boots that did not boot', len(failed),
        target=('==', 0),
        note='; '.join(r.get('problem', '') for r in failed[:2]))
    waited = [r for r in results if r.get('waited_for_filter')]
    add(SCENARIO_BOOT, label, 'boots whose first DISCOVER was ignored',
        len(waited), target=('==', 0),
        note='the filter allowed the MAC after the firmware asked '
             '(costs a DHCP retry)')
    if not refusals:
        return
    values = [r['call_to_denied'] for r in refusals if 'call_to_denied' in r]
    firmware_share = [r['qemu_to_denied'] for r in refusals
                      if 'qemu_to_denied' in r]
    s, f = stats.summary(values), stats.summary(firmware_share)
    add(SCENARIO_BOOT, label, 'abort call -> denied verdict p50', s['p50'],
        's', note='n=%d; verdict: 3 DISCOVERs ignored, no offer' % s['n'])
    add(SCENARIO_BOOT, label, 'abort call -> denied verdict max', s['max'],
        's')
    add(SCENARIO_BOOT, label, 'qemu start -> denied verdict p50', f['p50'],
        's', note='the firmware retries DHCP at ~+0, +1, +3 s')
    leaks = [r for r in refusals if r['leak']]
    add(SCENARIO_BOOT, label, 'boots right after abort that booted',
        len(leaks), target=('==', 0), note='n=%d' % len(refusals))
    other = [r for r in refusals if not r['leak'] and
             r['verdict'] != 'denied']
    if other:
        add(SCENARIO_BOOT, label, 'denied boots without a verdict',
            len(other), target=('==', 0),
            note='; '.join(r.get('problem', '') for r in other[:2]))


def _fmt(result, key):
    value = result.get(key)
    if value is None:
        return result.get('problem') or result.get('verdict', '-')
    return '%s %.2f s' % (key.replace('_', ' '), value)
