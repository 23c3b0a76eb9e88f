"""Scenarios 5 and 7: the real daemon (``PxefilterdRunner``: pxefilterd as a
process, dnsmasq started by it through rootwrap) against a real ironic.

5. Allow/deny latency.  For each of ``count`` different nodes of a
   bulk-loaded fixture: the timing prober (:mod:`.prober`) sends a
   DISCOVER for one of the node's MACs every 20 ms (0.1 s timeout, no
   retries); the benchmark calls ``inspect`` and polls the node's
   provision_state until ironic reports ``inspect wait`` (t0); the first
   OFFER to that MAC ends the allow latency.  Then ``abort``: t0 is when
   ironic reports ``inspect failed``, the end is the send time of the first
   of 3 consecutive DISCOVERs that got no OFFER within 0.1 s.  Latencies
   from the API calls' return are kept too.

7. Memory: VmRSS of the daemon after its first sync ("Ready") and after a
   few more full syncs (counted from its Prometheus endpoint), its peak
   (VmHWM), and the guard process.
"""

import datetime
import os
import random
import re
import socket
import time
import urllib.request

from pxefilterd_bench import counters
from pxefilterd_bench import env
from pxefilterd_bench import stats
from pxefilterd_bench.prober import Prober

SCENARIO_LATENCY = '5 allow/deny latency (real daemon, ironic, dnsmasq)'
SCENARIO_MEMORY = '7 daemon memory'
LATENCY_TARGET = ('<=', 2.0)
MEMORY_TARGET = ('<=', 100.0)


def _runner(root, name, ironic_svc, dm, options=None):
    from pxefilterd_harness.daemon import PxefilterdRunner
    return PxefilterdRunner(root / name, ironic_svc.url, dm, options=options)


def _wait_state(ironic_svc, node, state, timeout=60.0):
    """Poll quickly; return the monotonic time of the first answer that
    says ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        current = ironic_svc.provision_state(node)
        now = time.monotonic()
        if current == state:
            return now
        if now > deadline:
            raise RuntimeError('node %s still %r after %.0f s waiting for %r'
                               % (node, current, timeout, state))
        time.sleep(0.005)


def _transition(ironic_svc, p, node, mac, rng, verb, state, expect):
    """After a random pause (0-1 s), start probing ``mac`` for ``expect``,
    ask ironic to ``verb`` the node and wait until it reports ``state``.

    Returns ``(times, probe result)``; ``times`` has monotonic ``call``,
    ``return`` (of the API call) and ``state`` (first seen), and wall-clock
    ``wall_call`` and ``wall_state`` to compare with the daemon's log.
    """
    time.sleep(rng.uniform(0, 1.0))
    p.go(mac, expect)
    t = {'call': time.monotonic(), 'wall_call': time.time()}
    ironic_svc.set_provision_state(node, verb)
    t['return'] = time.monotonic()
    t['state'] = _wait_state(ironic_svc, node, state)
    t['wall_state'] = time.time() - (time.monotonic() - t['state'])
    return t, p.result()


def one_inspection(ironic_svc, p, node, mac, rng):
    """Inspect then abort ``node``; return the timings of both ways.

    ``p`` is a :class:`Prober` (one DISCOVER every 20 ms, 0.1 s timeout).
    A random pause (0-1 s) before each API call keeps the calls from
    locking onto the phase of the daemon's 1-s poll.
    """
    result = {'node': node, 'mac': mac}
    t, res = _transition(ironic_svc, p, node, mac, rng,
                         'inspect', 'inspect wait', 'offer')
    result.update(wall_inspect=t['wall_call'], wall_wait=t['wall_state'])
    if res.get('timeout'):
        result['allow_timeout'] = True
    else:
        result.update(allow=res['t_recv'] - t['state'],
                      allow_from_call=res['t_recv'] - t['return'],
                      inspect_call=t['return'] - t['call'],
                      wait_after_call=t['state'] - t['return'])
    t, res = _transition(ironic_svc, p, node, mac, rng,
                         'abort', 'inspect failed', 'silence')
    result.update(wall_abort=t['wall_call'], wall_failed=t['wall_state'])
    if res.get('timeout'):
        result['deny_timeout'] = True
    else:
        result.update(deny=res['t_silent'] - t['state'],
                      deny_from_call=res['t_silent'] - t['return'],
                      abort_call=t['return'] - t['call'])
    return result


_WROTE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*'
                    r'Wrote \d+ file\(s\)')


def write_times(log_text):
    """Wall-clock times of the daemon's ``Wrote N file(s)`` log lines."""
    times = []
    for line in log_text.splitlines():
        m = _WROTE.match(line)
        if m:
            stamp = datetime.datetime.strptime(m.group(1),
                                               '%Y-%m-%d %H:%M:%S.%f')
            times.append(stamp.timestamp())
    return times


def add_daemon_times(results, times):
    """Add ``daemon_allow``/``daemon_deny``: from ironic's report to the
    daemon's first write after the API call (pure)."""
    for r in results:
        for call, seen, key in (('wall_inspect', 'wall_wait', 'daemon_allow'),
                                ('wall_abort', 'wall_failed', 'daemon_deny')):
            if call not in r:
                continue
            after = [t for t in times if t >= r[call] - 0.002]
            if after:
                r[key] = after[0] - r[seen]


def run_latency(report, size, root, fixtures, count, interval=None):
    """``interval``: seconds between the prober's DISCOVERs (default 20 ms;
    100 ms from 50k ports on: with 100k per-MAC records dnsmasq needs
    ~30 ms of CPU per DISCOVER, and a faster prober would queue its own
    packets in dnsmasq's socket and measure that queue)."""
    if interval is None:
        interval = 0.02 if size < 50000 else 0.1
    label = '%s ports, %d inspections' % (env.fmt_size(size), count)
    results = []
    with fixtures.started(size) as (ironic_svc, load), \
            env.DhcpEnv(root, 'latency-%d' % size) as e:
        runner = _runner(root, 'daemon-latency-%d' % size, ironic_svc, e.dm)
        try:
            runner.start()
            runner.wait_ready(timeout=900)
            # dnsmasq reads its hosts after it has started: wait for it
            idle = env.wait_idle(e.dm.pid())
            env.progress('latency %s: daemon ready, dnsmasq idle after '
                         '%.1f s more', label, idle)
            by_node = {}
            for mac, node in sorted(load.ports.items()):
                by_node.setdefault(node, mac)
            nodes = load.nodes
            step = max(1, len(nodes) // count)
            rng = random.Random(size)
            with Prober(e.net, interval=interval, timeout=0.1, confirm=3,
                        max_seconds=120.0) as p:
                for i in range(count):
                    node = nodes[(i * step) % len(nodes)]
                    res = one_inspection(ironic_svc, p, node, by_node[node],
                                         rng)
                    results.append(res)
                    env.progress('latency %s: #%d allow %s, deny %s', label,
                                 i + 1, _fmt(res.get('allow')),
                                 _fmt(res.get('deny')))
            code = runner.stop()
            if code != 0:
                raise RuntimeError('pxefilterd exited %s' % code)
            add_daemon_times(results, write_times(runner.log_text()))
        finally:
            runner.close()
    report.detail('latency-%d' % size, results)
    rows = (('allow', 'allow: inspect wait -> first OFFER', True),
            ('daemon_allow', 'allow: inspect wait -> daemon wrote files',
             False),
            ('allow_from_call', 'allow: inspect API return -> first OFFER',
             False),
            ('deny', 'deny: inspect failed -> first silence', True),
            ('daemon_deny', 'deny: inspect failed -> daemon wrote files',
             False),
            ('deny_from_call', 'deny: abort API return -> first silence',
             False))
    for key, metric, targeted in rows:
        values = [r[key] for r in results if key in r]
        missing = len(results) - len(values)
        s = stats.summary(values)
        note = 'n=%d' % s['n'] + ('; %d never changed' % missing
                                  if missing else '')
        if key == 'allow':
            note += ('; < 0: allowed while still "inspecting", before '
                     'ironic reported "inspect wait"; DISCOVER every %d ms'
                     % (interval * 1000))
        if key.startswith('daemon'):
            note += '; from its log (ms resolution)'
        report.add(SCENARIO_LATENCY, label, metric + ' p50', s['p50'], 's',
                   note=note)
        report.add(SCENARIO_LATENCY, label, metric + ' p95', s['p95'], 's',
                   target=LATENCY_TARGET if targeted else None)
        report.add(SCENARIO_LATENCY, label, metric + ' max', s['max'], 's')
        if missing:
            report.add(SCENARIO_LATENCY, label, metric + ' timeouts',
                       missing, target=('==', 0))


def _fmt(value):
    return '-' if value is None else '%.3f s' % value


def _free_port():
    sock = socket.socket()
    try:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def scrape(port):
    """Return ``{metric name: value}`` of the daemon's metrics endpoint."""
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        name, _, value = line.rpartition(' ')
        try:
            values[name] = float(value)
        except ValueError:
            pass
    return values


def _children(pid):
    result = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, 'rb') as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(b')') + 2:].split()[1]) == pid:
            result.append(int(entry))
    return result


def run_memory(report, size, root, fixtures, extra_syncs=3, base=False,
               sync_period=15):
    layout = 'base hosts file' if base else 'per-MAC files'
    label = '%s ports, %s, sync every %d s' % (env.fmt_size(size), layout,
                                              sync_period)
    port = _free_port()
    options = {'metrics': {'enabled': 'True', 'listen_port': port},
               'pxe_filter': {'sync_period': sync_period}}
    with fixtures.started(size) as (ironic_svc, _), \
            env.DhcpEnv(root, 'memory-%d' % size, base_file=base) as e:
        if base:
            options['dnsmasq_pxe_filter'] = {
                'dhcp_hostsfile': str(e.base_path)}
        runner = _runner(root, 'daemon-memory-%d' % size, ironic_svc, e.dm,
                         options=options)
        try:
            t0 = time.monotonic()
            runner.start()
            runner.wait_ready(timeout=900)
            ready = time.monotonic() - t0
            pid = runner.pid
            rss_ready, _ = env.rss_mb(pid)
            first = scrape(port)
            syncs0 = first.get('pxefilterd_syncs_total', 0)
            env.progress('memory %s: ready after %.1f s, RSS %.1f MB; '
                         'waiting for %d more syncs', label, ready,
                         rss_ready, extra_syncs)
            samples = [rss_ready]
            deadline = time.monotonic() + 120 + extra_syncs * 120
            seen = syncs0
            while seen < syncs0 + extra_syncs:
                if time.monotonic() > deadline:
                    raise RuntimeError('only %d full syncs in time'
                                       % (seen - syncs0))
                time.sleep(1.0)
                now = scrape(port).get('pxefilterd_syncs_total', 0)
                if now > seen:
                    seen = now
                    samples.append(env.rss_mb(pid)[0])
            rss_after, hwm = env.rss_mb(pid)
            metrics = scrape(port)
            guards = [env.rss_mb(c)[0] for c in _children(pid)]
            cpu = counters.proc_cpu_seconds(pid)
            code = runner.stop()
            if code != 0:
                raise RuntimeError('pxefilterd exited %s' % code)
        finally:
            runner.close()
    count = metrics.get('pxefilterd_sync_duration_seconds_count') or 0
    total = metrics.get('pxefilterd_sync_duration_seconds_sum') or 0
    mean_sync = total / count if count else None
    report.detail('memory-%d' % size, {
        'ready_seconds': ready, 'rss_samples_mb': samples,
        'rss_after_mb': rss_after, 'hwm_mb': hwm,
        'helper_rss_mb': guards, 'cpu_seconds': cpu,
        'mean_full_sync_seconds': mean_sync, 'syncs': count})
    add = report.add
    add(SCENARIO_MEMORY, label, 'RSS after first sync', rss_ready, 'MB',
        target=MEMORY_TARGET, note='ready %.1f s after start' % ready)
    add(SCENARIO_MEMORY, label, 'RSS after %d more syncs' % extra_syncs,
        rss_after, 'MB', target=MEMORY_TARGET,
        note='samples: %s' % ', '.join('%.1f' % s for s in samples))
    add(SCENARIO_MEMORY, label, 'peak RSS (VmHWM)', hwm, 'MB',
        target=MEMORY_TARGET)
    add(SCENARIO_MEMORY, label, 'child processes RSS', sum(guards), 'MB',
        note='%d process(es): the guard' % len(guards))
    add(SCENARIO_MEMORY, label, 'mean full sync duration', mean_sync, 's',
        note='%d syncs, from the metrics histogram' % count)
