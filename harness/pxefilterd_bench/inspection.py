"""Scenario 11: real in-band inspections.  A qemu VM (TCG) PXE-boots through
dnsmasq, driven by the real pxefilterd, into the ironic-python-agent ramdisk
(:mod:`pxefilterd_harness.ramdisk`, built once and cached); the agent posts
its inventory to a real ironic through a relay in the VM's namespace
(:mod:`pxefilterd_harness.inspection`); ironic moves the node to
``manageable`` and pxefilterd denies its MAC.

Per inspection, in order (times from the VM's power-on, which follows the
``inspect`` call at once, as ironic would power the node on):

- **power-on -> first offer**: SeaBIOS and iPXE, and the filter letting the
  MAC through;
- **power-on -> agent posted**: kernel and initramfs over HTTP, the kernel
  and the agent under emulation (most of the time);
- **agent posted -> state change**: ironic's inspection hooks
  (``provision_updated_at``);
- **state change -> denied**: pxefilterd's hostsdir entry says ``ignore``
  (its mtime), target 2 s;
- **power-on -> denied**: the whole.

One VM at a time (a VM spins a core).  Each inspection takes about a minute
under TCG.
"""

import time

from pxefilterd_bench import env
from pxefilterd_bench import stats

SCENARIO_INSPECTION = '11 real inspections (agent ramdisk, qemu)'
#: (key, metric, target of the p95)
STEPS = (('offer', 'power-on -> first offer', None),
         ('posted', 'power-on -> agent posted', None),
         ('changed', 'agent posted -> ironic state change', None),
         ('denied', 'state change -> MAC denied', ('<=', 2.0)),
         ('total', 'power-on -> MAC denied', None))
AGENT_TIMEOUT = 600.0


def one_inspection(ironic_svc, net, dm, runner, workdir, i):
    """Inspect a new node whose VM boots the ramdisk; return the timings
    (or ``problem``)."""
    from pxefilterd_harness import inspection
    mac = '52:54:00:1f:%02x:%02x' % (i // 256, i % 256)
    node = ironic_svc.create_node('inspect-%d' % i)
    ironic_svc.create_port(node, mac)
    ironic_svc.inspect(node)
    machine = inspection.InspectionVm(net, dm, mac, workdir / ('vm-%d' % i))
    result = {'node': node, 'mac': mac}
    try:
        machine.start()
        power_on = time.time()
        machine.wait_for('posted', AGENT_TIMEOUT)
        ironic_svc.wait_for_state(node, 'manageable', 120)
        machine.close()
        changed = inspection.state_changed_at(ironic_svc, node)
        denied = inspection.wait_denied(runner.hostsdir, mac, 60)
    except Exception as exc:
        result['problem'] = '%s: %s' % (type(exc).__name__,
                                        str(exc)[:300])
        return result
    finally:
        machine.close()
        result['milestones'] = dict(machine.events)
    events = machine.events
    result.update(offer=events['offer'], posted=events['posted'],
                  changed=changed - (power_on + events['posted']),
                  denied=denied - changed, total=denied - power_on)
    return result


def run_inspection(report, root, count):
    """Run ``count`` inspections; add the rows to ``report``."""
    from pxefilterd_harness import inspection, ramdisk
    disk = ramdisk.ensure(say=env.progress)
    env.progress(disk.describe())
    work = root / 'inspection'
    work.mkdir(mode=0o755)
    label = '%d inspections' % count
    results = []
    with inspection.stack(work, disk) as st:
        for i in range(count):
            res = one_inspection(st.ironic, st.net, st.dnsmasq, st.runner,
                                 work, i)
            results.append(res)
            env.progress('inspection #%d: %s', i + 1, _fmt(res))
        code = st.runner.stop()
        if code != 0:
            raise RuntimeError('pxefilterd exited %s' % code)
    report.detail('inspection', {'inspections': results,
                                 'ramdisk': disk.info})
    add_rows(report, label, results, disk)


def add_rows(report, label, results, disk=None):
    """The table rows of one run (pure)."""
    add = report.add
    for key, metric, target in STEPS:
        values = [r[key] for r in results if r.get(key) is not None]
        s = stats.summary(values)
        add(SCENARIO_INSPECTION, label, metric + ' p50', s['p50'], 's',
            note='n=%d' % s['n'])
        add(SCENARIO_INSPECTION, label, metric + ' p95', s['p95'], 's',
            target=target)
    failed = [r for r in results if 'problem' in r]
    add(SCENARIO_INSPECTION, label, 'inspections that did not complete',
        len(failed), target=('==', 0),
        note='; '.join(r['problem'] for r in failed[:2]))
    if disk is not None:
        add(SCENARIO_INSPECTION, label, 'ramdisk initramfs',
            disk.info.get('initramfs_bytes', 0) / 1048576.0, 'MiB',
            note='built in %.0f s%s' % (disk.info.get('seconds', 0),
                                        '' if disk.built_now
                                        else ' (cached)'))


def _fmt(result):
    if 'problem' in result:
        return result['problem']
    return ', '.join('%s %.2f s' % (key, result[key])
                     for key, _, _ in STEPS)
