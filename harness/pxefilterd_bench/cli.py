"""``pxefilterd-bench``: measure pxefilterd against real services.

Prints a table on stdout (progress on stderr) and, with ``--json PATH``,
writes every figure and the raw data as JSON (also after each scenario
family, so a long run that is interrupted keeps what it measured).  Nothing
is asserted: targets are marked met or not.  A scenario that raises is
shown as ERROR in the table and the run goes on; the exit status is 1 when
any scenario crashed (the table's last line says which), 130 on Ctrl-C,
else 0.  Scenarios that cannot run on this machine (not root, no dnsmasq,
no ironic venv) are shown as SKIPPED.

Needs root for the network namespaces, raw DHCP probes and dnsmasq, the
ironic venv (``PXEFILTERD_IRONIC_VENV``), and 2 free cores for meaningful
figures.
"""

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

from pxefilterd_bench import env
from pxefilterd_bench import report as report_mod

FAMILIES = ('local', 'api', 'start', 'latency', 'bursts', 'cost', 'bigflip',
            'memory', 'events', 'load', 'boot', 'inspection', 'records')
DEFAULT_SIZES = (1000, 10000, 100000)
QUICK_SIZES = (1000, 10000)


def _ints(text):
    try:
        values = [int(v.replace('_', '')) for v in text.split(',') if v]
    except ValueError:
        raise argparse.ArgumentTypeError('not a list of integers: %r'
                                         % text) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError('need positive integers: %r' % text)
    return values


def _ints0(text):
    try:
        return [int(v.replace('_', '')) for v in text.split(',') if v]
    except ValueError:
        raise argparse.ArgumentTypeError('not a list of integers: %r'
                                         % text) from None


def _families(text):
    names = [n.strip() for n in text.split(',') if n.strip()]
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise argparse.ArgumentTypeError(
            'unknown scenario famil%s %s (choose from %s)'
            % ('y' if len(bad) == 1 else 'ies', ', '.join(bad),
               ', '.join(FAMILIES)))
    return names


def build_parser():
    p = argparse.ArgumentParser(
        prog='pxefilterd-bench',
        description=__doc__.split('\n\n')[0],
        epilog='Scenario families: local (1: hostsdir vs the '
               'inspector-like baseline), api (2 and 3: port listing, API '
               'cost per minute), start (4: dnsmasq cold start and SIGHUP), '
               'latency (5: allow/deny latency of the real daemon), bursts '
               '(6: lost updates, drain rate, paced writes), cost (6b: '
               'dnsmasq CPU per changed file vs records and leases), '
               'bigflip (6: 100k flip with SIGHUP, both layouts), memory '
               '(7: daemon RSS), events (8: every decision-changing ironic '
               'event -> DHCP answer), load (9: ironic server time per '
               'minute), boot (10: qemu VMs with real PXE firmware: inspect '
               '-> boot marker, abort -> denied), inspection (11: qemu VMs '
               'boot the ironic-python-agent ramdisk: power-on -> offer -> '
               'agent posted -> state change -> denied), records (12: '
               "dnsmasq's answer rate, latency, start and SIGHUP, and a "
               'storm of denied DISCOVERs, with a record for every port '
               'and with sparse records).')
    p.add_argument('--sizes', type=_ints, default=None,
                   help='port counts (default 1000,10000,100000; '
                        '--quick: 1000,10000)')
    p.add_argument('--quick', action='store_true',
                   help='small sizes and few repetitions (about 2 minutes)')
    p.add_argument('--json', metavar='PATH',
                   help='write every figure and the raw data here')
    p.add_argument('--only', type=_families, default=None,
                   help='run only these scenario families (comma list)')
    p.add_argument('--skip', type=_families, default=(),
                   help='skip these scenario families (comma list)')
    p.add_argument('--reps', type=int, default=None,
                   help='repetitions of the timed local and API scenarios')
    p.add_argument('--inspections', type=int, default=None,
                   help='inspections timed by the latency scenario '
                        '(default 20; --quick 10)')
    p.add_argument('--latency-size', type=int, default=None,
                   help='ports in the latency fixture (default 10000, and '
                        'also 100000 when 100000 is among the sizes; '
                        '--quick 1000)')
    p.add_argument('--burst-n', type=_ints, default=None,
                   help='existing per-MAC files for the burst runs '
                        '(default 10000,50000; --quick 10000)')
    p.add_argument('--burst-k', type=_ints, default=None,
                   help='files flipped at full speed (default '
                        '5000,10000,20000,40000; --quick 5000)')
    p.add_argument('--paced-k', type=int, default=None,
                   help='files flipped in the paced run (default: the '
                        'largest K that fits N; --quick 10000)')
    p.add_argument('--max-burst', type=int, default=None,
                   help='max_burst of the paced run (default: the '
                        "service's default)")
    p.add_argument('--burst-rate', type=int, default=None,
                   help='burst_rate of the paced run (default: the '
                        "service's default)")
    p.add_argument('--leases', type=_ints0, default=None,
                   help='lease counts for the dnsmasq cost runs (default '
                        '0,50,150; --quick 0,100)')
    p.add_argument('--boots', type=int, default=None,
                   help='VM boots timed by the boot scenario, per firmware '
                        '(default 20 BIOS, 10 UEFI; --quick 10 BIOS)')
    p.add_argument('--agent-boots', type=int, default=None,
                   help='inspections timed by the inspection scenario '
                        '(default 5; not run by --quick unless given)')
    p.add_argument('--workdir', default=None,
                   help='parent of the temporary work directory '
                        '(default /tmp; must be readable by nobody)')
    p.add_argument('--quiet', action='store_true',
                   help='no progress lines on stderr')
    return p


def make_plan(args):
    """Turn the command line into what each family runs (pure)."""
    from pxefilterd import service
    quick = args.quick
    sizes = list(args.sizes or (QUICK_SIZES if quick else DEFAULT_SIZES))
    families = list(args.only or FAMILIES)
    families = [f for f in families if f not in (args.skip or ())]
    defaults = service.Settings()
    plan = {
        'quick': quick,
        'sizes': sizes,
        'families': families,
        'local_reps': args.reps or (1 if quick else 3),
        'api_reps': args.reps or (1 if quick else 3),
        'api_cost_size': 10000 if 10000 in sizes else sizes[0],
        'latency_cases': [(args.latency_size or (1000 if quick else 10000),
                           args.inspections or (10 if quick else 20))]
        + ([(100000, args.inspections or 20)]
           if not quick and args.latency_size is None and 100000 in sizes
           else []),
        'burst_n': args.burst_n or ([10000] if quick else [10000, 50000]),
        'burst_k': args.burst_k or ([5000] if quick
                                    else [5000, 10000, 20000, 40000]),
        'paced_k': args.paced_k or (10000 if quick else None),
        'max_burst': args.max_burst or defaults.max_burst,
        'burst_rate': args.burst_rate or defaults.burst_rate,
        'leases': args.leases if args.leases is not None
        else ([0, 100] if quick else [0, 50, 150]),
        'cost_budget': 5.0 if quick else 15.0,
        'cost_sizes': ([(10000, 'files')] if quick else
                       [(10000, 'files'), (50000, 'files'),
                        (100000, 'base')]),
        'bigflip_sizes': [] if quick else [s for s in sizes
                                           if s >= 100000],
        'memory_sizes': [max(sizes)] if quick else sizes,
        'start_sizes': [max(sizes)] if quick else sizes,
        'start_sample': 20 if quick else 100,
        'memory_syncs': 1 if quick else 3,
        'memory_sync_period': 3 if quick else 15,
        'events_cases': ([(1000, 3)] if quick else
                         [(s, 20) for s in (10000, 100000) if s in sizes]
                         or [(max(sizes), 20)]),
        'events_batches': (5, 50) if quick else (20, 1200),
        'load_sizes': ([10000] if quick else
                       [s for s in (10000, 100000) if s in sizes]
                       or [max(sizes)]),
        'load_window': 20.0 if quick else 60.0,
        # (firmware, ports in the ironic fixture, boots, denied boots)
        'boot_cases': ([('bios', 1000, args.boots or 10, 3)] if quick else
                       [('bios', 10000, args.boots or 20, 5),
                        ('uefi', 10000, args.boots or 10, 3)]),
        # about a minute per inspection under TCG, plus a ramdisk build
        # (minutes) when its inputs changed: not part of --quick
        'inspection_count': (args.agent_boots if args.agent_boots is not None
                             else 0 if quick else 5),
        # known ports besides the 20 inspected ones; 0 = no records
        'records_sizes': ([0, 1000] if quick else
                          [0] + [s for s in (10000, 100000) if s in sizes]
                          if args.sizes is None else [0] + sizes),
    }
    return plan


def _meta(plan, argv):
    meta = {
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'argv': list(argv),
        'plan': plan,
        'python': sys.version.split()[0],
        'kernel': platform.release(),
        'cpus': os.cpu_count(),
        'loadavg_start': _loadavg(),
    }
    try:
        from pxefilterd_bench.dnsmasq_bench import inotify_queue
        meta['inotify_max_queued_events'] = inotify_queue()
        out = subprocess.run(['/usr/sbin/dnsmasq', '--version'],
                             capture_output=True, text=True, timeout=10)
        meta['dnsmasq'] = out.stdout.splitlines()[0] if out.stdout else None
    except (OSError, subprocess.SubprocessError, IndexError):
        meta['dnsmasq'] = None
    try:
        import importlib.metadata as md
        meta['openstacksdk'] = md.version('openstacksdk')
    except Exception:   # metadata is informative only
        meta['openstacksdk'] = None
    return meta


def _loadavg():
    try:
        with open('/proc/loadavg') as f:
            return f.read().split()[:3]
    except OSError:
        return None


class Runner:
    """Runs the plan, one guarded case at a time."""

    def __init__(self, plan, report, root, json_path=None):
        self.plan = plan
        self.report = report
        self.root = root
        self.json_path = json_path
        self._fixtures = None
        self.burst_results = []
        self.cost_results = []

    @property
    def fixtures(self):
        if self._fixtures is None:
            path = self.root / 'fixtures'
            path.mkdir(mode=0o755, exist_ok=True)
            self._fixtures = env.IronicFixtures(path)
        return self._fixtures

    def case(self, scenario, case, func, *args, **kwargs):
        """Run one case; an exception becomes an ERROR row."""
        started = time.monotonic()
        load = self.report.meta.setdefault('loadavg_per_case', [])
        load.append({'case': '%s / %s' % (scenario, case),
                     'before': _loadavg()})
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            env.progress('%s / %s FAILED: %s', scenario, case,
                         traceback.format_exc())
            self.report.error(scenario, case,
                              '%s: %s' % (type(exc).__name__, exc))
            return None
        finally:
            load[-1]['after'] = _loadavg()
            load[-1]['seconds'] = time.monotonic() - started
            env.progress('%s / %s: %.1f s', scenario, case,
                         time.monotonic() - started)

    def save(self):
        if self.json_path:
            self.report.meta['loadavg_end'] = _loadavg()
            self.report.write_json(self.json_path)

    def _problem(self, scenario, needs):
        from pxefilterd_harness import preflight
        problems = []
        if 'dhcp' in needs:
            problems.append(preflight.dhcp_problem())
        if 'ironic' in needs:
            problems.append(preflight.ironic_problem())
        problem = next((p for p in problems if p), None)
        if problem:
            self.report.skip(scenario, 'all', problem)
        return problem

    # -- families -----------------------------------------------------------

    def local(self):
        from pxefilterd_bench import local
        for size in self.plan['sizes']:
            path = self.root / ('local-%d' % size)
            path.mkdir(mode=0o755)
            self.case(local.SCENARIO, '%s ports' % env.fmt_size(size),
                      local.run, self.report, size, path,
                      self.plan['local_reps'])

    def api(self):
        from pxefilterd_bench import api
        if self._problem(api.SCENARIO_LIST, ('ironic',)):
            return
        for size in self.plan['sizes']:
            self.case(api.SCENARIO_LIST, '%s ports' % env.fmt_size(size),
                      self._api_size, size)

    def _api_size(self, size):
        from pxefilterd_bench import api
        with self.fixtures.started(size) as (svc, _):
            runs = api.measure_listing(svc, size, self.plan['api_reps'])
            self.report.detail('api-listing-%d' % size, runs)
            api.listing_rows(self.report, size, runs)
            if size == self.plan['api_cost_size']:
                self.case(api.SCENARIO_COST, '%s ports' % env.fmt_size(size),
                          api.measure_cost, self.report, svc, size, runs)

    def start(self):
        from pxefilterd_bench import dnsmasq_bench as dm
        if self._problem(dm.SCENARIO_START, ('dhcp',)):
            return
        for size in self.plan['start_sizes']:
            for layout in ('files', 'base'):
                self.case(dm.SCENARIO_START, '%s MACs, %s'
                          % (env.fmt_size(size), layout),
                          dm.run_startup, self.report, size, self.root,
                          layout, probe_sample=self.plan['start_sample'])

    def latency(self):
        from pxefilterd_bench import latency
        if self._problem(latency.SCENARIO_LATENCY, ('dhcp', 'ironic')):
            return
        for size, count in self.plan['latency_cases']:
            self.case(latency.SCENARIO_LATENCY, '%s ports'
                      % env.fmt_size(size), latency.run_latency, self.report,
                      size, self.root, self.fixtures, count)
            self.save()

    def bursts(self):
        from pxefilterd_bench import dnsmasq_bench as dm
        if self._problem(dm.SCENARIO_BURST, ('dhcp',)):
            return
        for n in self.plan['burst_n']:
            ks = [k for k in self.plan['burst_k'] if k <= n]
            paced_k = self.plan['paced_k'] or max(
                [k for k in self.plan['burst_k'] if k <= n] or [n])
            paced = (min(paced_k, n), self.plan['max_burst'],
                     self.plan['burst_rate'])
            results = self.case(dm.SCENARIO_BURST, 'N=%s'
                                % env.fmt_size(n), dm.run_bursts,
                                self.report, n, ks, self.root, paced=paced)
            self.burst_results.extend(results or [])
            self.save()

    def cost(self):
        from pxefilterd_bench import dnsmasq_bench as dm
        if self._problem(dm.SCENARIO_COST, ('dhcp',)):
            return
        for n, layout in self.plan['cost_sizes']:
            results = self.case(dm.SCENARIO_COST, 'N=%s %s'
                                % (env.fmt_size(n), layout),
                                dm.run_event_cost, self.report, n,
                                self.plan['leases'], self.root, layout,
                                budget=self.plan['cost_budget'])
            self.cost_results.extend(results or [])
            self.save()

    def bigflip(self):
        from pxefilterd_bench import dnsmasq_bench as dm
        if not self.plan['bigflip_sizes']:
            return
        if self._problem(dm.SCENARIO_BURST, ('dhcp',)):
            return
        for n in self.plan['bigflip_sizes']:
            for layout in ('files', 'base'):
                self.case(dm.SCENARIO_BURST, 'N=K=%s %s'
                          % (env.fmt_size(n), layout), dm.run_big_flip,
                          self.report, n, self.root, layout)
                self.save()

    def memory(self):
        from pxefilterd_bench import latency
        if self._problem(latency.SCENARIO_MEMORY, ('dhcp', 'ironic')):
            return
        for size in self.plan['memory_sizes']:
            self.case(latency.SCENARIO_MEMORY, '%s ports'
                      % env.fmt_size(size), latency.run_memory, self.report,
                      size, self.root, self.fixtures,
                      extra_syncs=self.plan['memory_syncs'],
                      sync_period=self.plan['memory_sync_period'])
            self.save()

    def events(self):
        from pxefilterd_bench import events
        if self._problem(events.SCENARIO_EVENTS, ('dhcp', 'ironic')):
            return
        for size, count in self.plan['events_cases']:
            self.case(events.SCENARIO_EVENTS, '%s ports' % env.fmt_size(size),
                      events.run_events, self.report, size, self.root,
                      self.fixtures, count, self.plan['events_batches'])

    def load(self):
        from pxefilterd_bench import events
        if self._problem(events.SCENARIO_LOAD, ('dhcp', 'ironic')):
            return
        for size in self.plan['load_sizes']:
            self.case(events.SCENARIO_LOAD, '%s ports' % env.fmt_size(size),
                      events.run_load, self.report, size, self.root,
                      self.fixtures, self.plan['load_window'])

    def boot(self):
        from pxefilterd_bench import boot
        from pxefilterd_harness import vm
        if self._problem(boot.SCENARIO_BOOT, ('dhcp', 'ironic')):
            return
        for firmware, size, count, denied in self.plan['boot_cases']:
            case = '%s, %s ports' % (firmware.upper(), env.fmt_size(size))
            problem = vm.vm_problem(firmware)
            if problem:
                self.report.skip(boot.SCENARIO_BOOT, case, problem)
                continue
            self.case(boot.SCENARIO_BOOT, case, boot.run_boot, self.report,
                      size, self.root, self.fixtures, firmware, count, denied)
            self.save()

    def inspection(self):
        from pxefilterd_bench import inspection
        from pxefilterd_harness import ramdisk, vm
        scenario = inspection.SCENARIO_INSPECTION
        if self._problem(scenario, ('dhcp', 'ironic')):
            return
        count = self.plan['inspection_count']
        problem = (None if count else
                   'not in --quick (about a minute per inspection): '
                   '--agent-boots N runs it') \
            or vm.vm_problem('bios') or ramdisk.problem()
        if problem:
            self.report.skip(scenario, 'all', problem)
            return
        self.case(scenario, '%d inspections' % count,
                  inspection.run_inspection, self.report, self.root, count)

    def records(self):
        from pxefilterd_bench import records
        if self._problem(records.SCENARIO, ('dhcp',)):
            return
        sizes = self.plan['records_sizes']
        self.case(records.SCENARIO, '%s known ports' % ', '.join(
            records.fmt(s) for s in sizes), records.run, self.report,
            sizes, self.root)

    def recommendation(self):
        from pxefilterd_bench import dnsmasq_bench as dm
        if not (self.burst_results or self.cost_results):
            return
        rec = dm.recommend(self.burst_results + self.cost_results,
                           queue=dm.inotify_queue())
        safety = dm.defaults_safety(self.burst_results, self.cost_results,
                                    self.plan['max_burst'],
                                    self.plan['burst_rate'])
        self.report.detail('burst-recommendation', {'recommended': rec,
                                                    'defaults': safety})
        dm.recommendation_rows(self.report, rec, safety)

    def run(self):
        for family in self.plan['families']:
            env.progress('== %s ==', family)
            getattr(self, family)()
            self.save()
        self.recommendation()
        self.save()


def main(argv=None):
    # SIGTERM (e.g. a CI timeout) must clean up like Ctrl-C: every scenario
    # stops what it started in ``finally`` blocks, which a default SIGTERM
    # would skip, leaving daemons, dnsmasq and namespaces behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    env.set_quiet(args.quiet)
    plan = make_plan(args)
    report = report_mod.Report(_meta(plan, argv))
    status = 0
    started = time.monotonic()
    with env.workdir(args.workdir) as root:
        runner = Runner(plan, report, root, args.json)
        try:
            runner.run()
        except KeyboardInterrupt:
            env.progress('interrupted: cleaning up')
            report.error('run', 'interrupted', 'KeyboardInterrupt')
            status = 130
        except Exception as exc:   # a bug in the orchestration itself
            env.progress('benchmark crashed: %s', traceback.format_exc())
            report.error('run', 'orchestration',
                         '%s: %s' % (type(exc).__name__, exc))
            status = 1
    report.meta['seconds'] = time.monotonic() - started
    report.meta['loadavg_end'] = _loadavg()
    if args.json:
        report.write_json(args.json)
    sys.stdout.write(report.table())
    sys.stdout.write('\n')
    if report.crashed and status == 0:
        status = 1
    if report.crashed:
        sys.stdout.write('%d scenario(s) crashed: %s; exit status %d\n'
                         % (len(report.crashed), '; '.join(report.crashed),
                            status))
    else:
        sys.stdout.write('All scenarios ran (%.0f s); exit status 0\n'
                         % report.meta['seconds'])
    sys.stdout.flush()
    return status


if __name__ == '__main__':
    sys.exit(main())
