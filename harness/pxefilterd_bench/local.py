"""Scenario 1: hostsdir costs, pxefilterd vs the inspector-like baseline.

Both drivers run in this process on the same data, each in its own
directory, one after the other:

- *first sync*: empty directory, N known MACs (all denied, unknown denied);
- *no-op sync*: the same decision again (timed ``reps`` times, then once
  more with every file call counted);
- *1% churn*: 1% of the nodes go under inspection (their MACs allowed;
  ``deny_unknown_macs`` keeps the wildcard as it is);
- *unknown-policy flip*: the wildcard flips to allow (auto-discovery on);
  no known MAC changes.

pxefilterd's sync is what :meth:`pxefilterd.service.Service._apply` does
without dnsmasq running: ``policy.decide`` + ``policy.diff`` against the
in-memory index + ``HostsDir.apply`` (staging-dir renames).  Its first sync
with a base hosts file (``HostsDir.rebase``: one file) is shown too.

Both write a record for every port (``sparse_records=False``): the baseline
cannot do otherwise, and the costs compared are those of the files.  Sparse
records (only the allowed MACs with ``deny_unknown_macs``) are family 12,
``records``.
"""

import dataclasses
import shutil

from pxefilterd import hostsdir
from pxefilterd import policy
from pxefilterd_bench import baseline as baseline_mod
from pxefilterd_bench import counters
from pxefilterd_bench import env
from pxefilterd_bench import stats

SCENARIO = '1 hostsdir: pxefilterd vs inspector-like baseline'
NOOP_RUNS = 3


def snapshot(ports, inspecting):
    """A snapshot where ``inspecting`` are in inspect wait (agent)."""
    waiting = policy.NodeInfo('inspect wait', 'agent')
    return policy.Snapshot(ports=ports,
                           nodes=dict.fromkeys(inspecting, waiting))


def per_port(options):
    """``options`` with a record for every port."""
    return dataclasses.replace(options, sparse_records=False)


class Ours:
    """pxefilterd's store driven like the service does."""

    def __init__(self, path, base_path=None):
        self.store = hostsdir.HostsDir(str(path), base_path=base_path)
        self.store.check()

    def sync(self, ports, inspecting, options):
        desired = policy.decide(snapshot(ports, inspecting),
                                per_port(options), self.store.cached())
        return self.store.apply(policy.diff(self.store.current(), desired))

    def first_sync_base(self, ports, inspecting, options):
        """The service's first sync with a base file: rebase."""
        desired = policy.decide(snapshot(ports, inspecting),
                                per_port(options), self.store.cached())
        before = self.store.files_written
        self.store.rebase(dict(desired.macs), desired.unknown)
        return self.store.files_written - before


class Baseline:
    def __init__(self, path):
        self.driver = baseline_mod.InspectorLikeHostsDir(str(path))

    def sync(self, ports, inspecting, options):
        active = {mac for mac, node in ports.items() if node in inspecting}
        unknown = policy.unknown_action(frozenset(inspecting), options)
        return self.driver.sync(ports.keys(), active,
                                unknown is policy.Action.ALLOW)


def _timed(counter, root, func, *args, trace=False):
    with counter.counting(root, trace=trace) as c:
        written = func(*args)
    c['written'] = written
    return c


def run(report, size, root, reps):
    """Measure one size; add rows to ``report``; raw data in details."""
    counter = counters.SyscallCounter.get()
    label = '%s ports' % env.fmt_size(size)
    macs = env.make_macs(size, prefix='52:54:20')
    ports = {mac: 'node-%d' % (i // 2) for i, mac in enumerate(macs)}
    nodes = sorted(set(ports.values()))
    strict = policy.Options(deny_unknown_macs=True)
    discovery = policy.Options(auto_discovery=True)
    churn_nodes = frozenset(nodes[::100])      # 1% of the nodes
    detail = {}
    results = {'ours': [], 'baseline': [], 'ours_base_first': []}
    for rep in range(reps):
        for name, make in (('ours', Ours), ('baseline', Baseline)):
            d = root / ('%s-%d-%d' % (name, size, rep))
            d.mkdir(mode=0o755)
            drv = make(d)
            env.progress('local %s: %s, sequence %d/%d', label, name,
                         rep + 1, reps)
            res = {}
            sync = drv.sync
            res['first'] = _timed(counter, d, sync, ports, frozenset(),
                                  strict)
            res['noop_runs'] = [
                _timed(counter, d, sync, ports, frozenset(), strict)
                for _ in range(NOOP_RUNS)]
            res['noop_counted'] = _timed(counter, d, sync, ports,
                                         frozenset(), strict, trace=True)
            res['churn'] = _timed(counter, d, sync, ports, churn_nodes,
                                  strict)
            res['flip'] = _timed(counter, d, sync, ports, churn_nodes,
                                 discovery)
            # a no-op after the changes still finds nothing to do
            res['noop_after'] = _timed(counter, d, sync, ports, churn_nodes,
                                       discovery, trace=True)
            results[name].append(res)
        # pxefilterd's first sync with the base hosts file layout
        d = root / ('ours-base-%d-%d' % (size, rep))
        d.mkdir(mode=0o755)
        ours_base = Ours(d, base_path=str(root / ('base-%d-%d'
                                                  % (size, rep))))
        results['ours_base_first'].append(_timed(
            counter, d, ours_base.first_sync_base, ports, frozenset(),
            strict))
        _check_same(root / ('ours-%d-%d' % (size, rep)),
                    root / ('baseline-%d-%d' % (size, rep)))
        for name in ('ours', 'baseline', 'ours-base'):
            for path in root.glob('%s-%d-%d*' % (name, size, rep)):
                shutil.rmtree(path, ignore_errors=True)
    detail.update(results)
    report.detail('local-%d' % size, detail)

    def med(name, case, key='wall'):
        return stats.median([r[case][key] for r in results[name]])

    def med_noop(name, key):
        return stats.median([run[key] for r in results[name]
                             for run in r['noop_runs']])

    def last(name, case):
        return results[name][-1][case]

    def add(case, metric, ours, base, unit='', target=None, note=''):
        report.add(SCENARIO, '%s: %s' % (label, case), metric, ours, unit,
                   baseline=base, target=target, note=note)

    seq = 'median of %d' % reps
    add('first sync', 'time', med('ours', 'first'), med('baseline', 'first'),
        's', note=seq)
    add('first sync', 'files written', last('ours', 'first')['written'],
        last('baseline', 'first')['written'])
    base_first = results['ours_base_first']
    add('first sync (base file)', 'time',
        stats.median([r['wall'] for r in base_first]),
        med('baseline', 'first'), 's',
        note='rebase: one hosts file + the wildcard; ' + seq)
    add('first sync (base file)', 'files written', base_first[-1]['written'],
        last('baseline', 'first')['written'])
    note = 'median of %d' % (reps * NOOP_RUNS)
    add('no-op sync', 'time', med_noop('ours', 'wall'),
        med_noop('baseline', 'wall'), 's', note=note)
    add('no-op sync', 'CPU time', med_noop('ours', 'cpu'),
        med_noop('baseline', 'cpu'), 's', note=note)
    oc, bc = last('ours', 'noop_counted'), last('baseline', 'noop_counted')
    add('no-op sync', 'files written', oc['written'], bc['written'],
        target=('==', 0))
    add('no-op sync', 'per-file syscalls', oc['per_file'], bc['per_file'],
        target=('==', 0),
        note='open/stat/rename/remove/chmod; ours: %s; base: %s'
        % (_kinds(oc), _kinds(bc)))
    add('no-op sync', 'directory listings', oc['listings'], bc['listings'])
    add('no-op sync', 'read+write syscalls', oc.get('syscr', 0)
        + oc.get('syscw', 0), bc.get('syscr', 0) + bc.get('syscw', 0),
        note='/proc/self/io syscr+syscw')
    add('1% churn', 'time', med('ours', 'churn'), med('baseline', 'churn'),
        's', note='%d nodes to inspection; %s' % (len(churn_nodes), seq))
    add('1% churn', 'files written', last('ours', 'churn')['written'],
        last('baseline', 'churn')['written'])
    add('unknown-policy flip', 'time', med('ours', 'flip'),
        med('baseline', 'flip'), 's', note=seq)
    add('unknown-policy flip', 'files written',
        last('ours', 'flip')['written'], last('baseline', 'flip')['written'],
        note='known MACs unchanged')
    add('no-op after changes', 'per-file syscalls',
        last('ours', 'noop_after')['per_file'],
        last('baseline', 'noop_after')['per_file'], target=('==', 0))


def _kinds(counts):
    parts = ['%s %d' % (k, counts[k]) for k in
             ('open', 'stat', 'rename', 'remove', 'chmod') if counts.get(k)]
    return ', '.join(parts) or 'none'


def _check_same(ours, base):
    """Both drivers must have produced exactly the same files."""
    import os
    names = sorted(os.listdir(ours))
    if names != sorted(os.listdir(base)):
        raise AssertionError('the drivers disagree on the file names')
    for name in names:
        with open(os.path.join(ours, name), 'rb') as a, \
                open(os.path.join(base, name), 'rb') as b:
            if a.read() != b.read():
                raise AssertionError('the drivers disagree on %s' % name)
