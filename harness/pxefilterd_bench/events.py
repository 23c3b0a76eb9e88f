"""Scenarios 8 and 9: every decision-changing ironic event, and what
watching ironic costs it.  The real daemon (defaults: inspection poll every
second, full listing every 900 s) against a real ironic and a real dnsmasq.

8. **Event latency.**  For each kind, ``count`` events; each is timed from
   the moment ironic has made the change (its API call returned, or for
   inspection states: ironic reports the new state) to the first DHCP
   answer that agrees, seen by the timing prober (one DISCOVER every 20 ms,
   or 100 ms at 100k records; "silence" = 3 DISCOVERs in a row without an
   OFFER within 0.1 s).  Kinds:

   - a node enters inspection (``inspect wait`` -> OFFER) and leaves it
     (``abort`` -> ``inspect failed`` -> silence);
   - with ``deny_unknown_macs``: a port created on an inspected node
     (OFFER), its address changed (new address OFFER, or old one silent,
     alternately), the port deleted (silence); an inspected node's
     ``inspect_interface`` changed to one without PXE (silence); an
     inspected node deleted (maintenance, delete: silence);
   - with the default policy while a node is inspected (unknown MACs
     boot): a port created on a node that is not inspected (its MAC goes
     silent), a port of such a node readdressed (the new address silent,
     or the old one answered, alternately);
   - batches: 20 nodes, and 1,200 nodes, put into inspection at once (as
     fast as the API takes them, 4 at a time): per node, from ironic's
     ``inspection_started_at`` (entered ``inspecting``) and from its
     ``provision_updated_at`` in ``inspect wait`` to the daemon's decision
     (its decision log, ms resolution), ironic's own time from one to the
     other for context, and DHCP probes of every MAC until all are
     answered (from the last node's start).

   Deletions on nodes that are not inspected leave no trace in any cheap
   listing: the full listing finds them (``sync_period``); not timed here.

9. **ironic server time per minute.**  The daemon talks to ironic through
   :class:`pxefilterd_harness.proxy.IronicProxy`, which times every request
   (request sent -> last byte of the answer).  Idle (no node inspected), and
   with 20 nodes inspected, over ``window`` seconds; the first full
   listing's time is spread over the time to the next one
   (``sync_period``, or longer: listings take at most 2 % of ironic's
   time).  "Before" is the previous release's pattern (a full listing
   every 15 s plus two node requests a second), from the same request
   times.
"""

import concurrent.futures
import datetime
import itertools
import re
import signal
import time
import urllib.parse

from pxefilterd import feed
from pxefilterd_bench import api as api_bench
from pxefilterd_bench import env
from pxefilterd_bench import latency as latency_bench
from pxefilterd_bench import stats
from pxefilterd_bench.prober import Prober
from pxefilterd_harness import dhcp_probe

SCENARIO_EVENTS = '8 ironic events: change -> DHCP agrees'
SCENARIO_LOAD = '9 ironic server time per minute (steady state)'
EVENT_TARGET = ('<=', 2.0)
LOAD_TARGETS = {10000: ('<=', 1.0), 100000: ('<=', 3.0)}
SYNC_PERIOD = 900


class Events:
    """One daemon, one ironic fixture, and the timed events."""

    def __init__(self, ironic_svc, load, e, runner, interval):
        self.ironic = ironic_svc
        self.e = e
        self.runner = runner
        self.interval = interval
        self.by_node = {}
        for mac, node in sorted(load.ports.items()):
            self.by_node.setdefault(node, []).append(mac)
        self.pool = iter(load.nodes)
        self.fresh = ('52:54:20:%02x:%02x:%02x' % (i >> 16, (i >> 8) & 255,
                                                    i & 255)
                      for i in itertools.count(1))
        self.results = {}

    def node(self):
        """A node nobody has touched yet: ``(uuid, first MAC)``."""
        uuid = next(self.pool)
        return uuid, self.by_node[uuid][0]

    def record(self, kind, value):
        self.results.setdefault(kind, []).append(value)

    def timed(self, kind, p, mac, until, method, *args, **kwargs):
        """Probe ``mac`` for ``until``, make the change (``method`` of the
        ironic harness), record the latency from the call's return; return
        what the call returned."""
        time.sleep(0.2 + (len(self.results.get(kind, ())) % 10) / 10.0)
        p.go(mac, until)
        answer = getattr(self.ironic, method)(*args, **kwargs)
        made = time.monotonic()
        res = p.result()
        if res.get('timeout'):
            self.record(kind, None)
        else:
            seen = res['t_recv'] if until == 'offer' else res['t_silent']
            self.record(kind, seen - made)
        return answer

    def inspect(self, node, mac, p):
        """Put ``node`` into inspect wait and wait until it boots."""
        self.ironic.inspect(node)
        p.go(mac, 'offer')
        res = p.result()
        if res.get('timeout'):
            raise RuntimeError('node %s never allowed' % node)

    def set_deny_unknown(self, value):
        text = self.runner.conf_path.read_text()
        text = re.sub(r'deny_unknown_macs = \w+\n', '', text)
        text = text.replace('[pxe_filter]\n', '[pxe_filter]\n'
                            'deny_unknown_macs = %s\n' % value)
        self.runner.conf_path.write_text(text)
        count = self.runner.log_text().count('SIGHUP: configuration reloaded')
        self.runner.proc.send_signal(signal.SIGHUP)
        self.runner.wait_for_log('SIGHUP: configuration reloaded',
                                 count=count + 1)
        time.sleep(1.0)

    # -- the kinds ---------------------------------------------------------

    def inspections(self, p, rng, count):
        for _ in range(count):
            node, mac = self.node()
            res = latency_bench.one_inspection(self.ironic, p, node, mac, rng)
            self.record('node enters inspection', res.get('allow'))
            self.record('node leaves inspection (abort)', res.get('deny'))

    def inspected_node_ports(self, p, count, anchor):
        kind = 'port created on an inspected node'
        created = []
        for _ in range(count):
            mac = next(self.fresh)
            port = self.timed(kind, p, mac, 'offer', 'create_port', anchor,
                              mac)
            created.append((port, mac))
        self.readdress(p, 'address changed on an inspected node', created,
                       'offer')
        for port, mac in created:
            self.timed('port deleted from an inspected node', p, mac,
                       'silence', 'delete_port', port)

    def readdress(self, p, kind, ports, new_gets):
        """Give each port a new address; time the new one getting
        ``new_gets`` and the old one the other answer, alternately.
        ``ports`` is updated in place."""
        other = 'silence' if new_gets == 'offer' else 'offer'
        for i, (port, old) in enumerate(ports):
            new = next(self.fresh)
            mac, until = (new, new_gets) if i % 2 == 0 else (old, other)
            self.timed(kind, p, mac, until, 'patch_port', port, address=new)
            ports[i] = (port, new)

    def interface_changes(self, p, count):
        for _ in range(count):
            node, mac = self.node()
            self.inspect(node, mac, p)
            self.timed('inspect_interface changed to one without PXE', p,
                       mac, 'silence', 'patch_node', node,
                       inspect_interface='fake')

    def deletions(self, p, count):
        for _ in range(count):
            node, mac = self.node()
            self.inspect(node, mac, p)
            self.ironic.set_maintenance(node, True)
            self.timed('inspected node deleted', p, mac, 'silence',
                       'delete_node', node)

    def enrolled_port(self):
        """``(port UUID, MAC)`` of an enrolled port nobody has touched."""
        _, mac = self.node()
        doc = self.ironic.request('GET', '/v1/ports?address=%s&fields=uuid'
                                  % mac)
        return doc['ports'][0]['uuid'], mac

    def other_node_ports(self, p, count):
        other, _ = self.node()
        for _ in range(count):
            mac = next(self.fresh)
            self.timed('port created on a node not inspected', p, mac,
                       'silence', 'create_port', other, mac)
        # Ports enrolled long ago, not those just created: the newest ports
        # are re-read by the new-ports feed at every cycle, address and all,
        # and would flatter the changed-ports feed's figure.
        self.readdress(p, 'address changed on a node not inspected',
                       [self.enrolled_port() for _ in range(count)],
                       'silence')

    def batch(self, kind, size):
        """Inspect ``size`` nodes at once; per node, ironic's
        provision_updated_at -> the daemon's decision; then probe every
        MAC until all are answered."""
        nodes = [self.node() for _ in range(size)]
        start = time.time()

        def inspect(node):
            try:
                self.ironic.set_provision_state(node[0], 'inspect')
            except Exception as exc:   # e.g. an API timeout under the load
                env.progress('inspect %s: %s', node[0], exc)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(inspect, nodes))
        deadline = time.monotonic() + 120
        pending = {mac for _, mac in nodes}
        offered = {}
        while pending and time.monotonic() < deadline:
            result = dhcp_probe.probe(
                self.e.net, sorted(pending), timeout=0.3, retries=0,
                rate=1000)
            now = time.time()
            for mac in list(pending):
                if result[mac].offer:
                    offered[mac] = now
                    pending.discard(mac)
        changed = decision_times(self.runner.log_text(), since=start)
        stamps = inspection_times(self.ironic, [n for n, _ in nodes])
        for node, mac in nodes:
            started, waiting = stamps.get(node, (None, None))
            decided = changed.get(mac)
            self.record(kind + ': inspection started -> decision',
                        decided - started if decided and started else None)
            self.record(kind + ': inspect wait -> decision',
                        decided - waiting if decided and waiting else None)
            self.record(kind + ': ironic inspecting -> inspect wait',
                        waiting - started if waiting and started else None)
        last = max((s for s, _ in stamps.values() if s), default=start)
        probe_done = max(offered.values()) if offered else None
        self.record(kind + ': all answered after the last one started '
                    '(probes)',
                    probe_done - last if probe_done and not pending
                    else None)
        for node, _ in nodes:
            try:
                self.ironic.set_provision_state(node, 'abort')
            except Exception as exc:
                env.progress('abort %s: %s', node, exc)


_DECISION = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*'
                       r'pxefilterd\.decision .*MAC ([0-9a-f:]{17}): '
                       r'deny -> allow')


def decision_times(log_text, since=0.0):
    """``{mac: wall time}`` of the first deny -> allow decision after
    ``since``, from the daemon's decision log (pure)."""
    found = {}
    for line in log_text.splitlines():
        m = _DECISION.match(line)
        if m:
            stamp = datetime.datetime.strptime(
                m.group(1), '%Y-%m-%d %H:%M:%S.%f').timestamp()
            if stamp >= since:
                found.setdefault(m.group(2), stamp)
    return found


def inspection_times(ironic_svc, nodes):
    """``{node: (started, waiting)}``: wall times of ironic's
    ``inspection_started_at`` (the node entered ``inspecting``) and, for a
    node now in ``inspect wait``, ``provision_updated_at`` (it got there).
    """
    result = {}
    for node in nodes:
        doc = ironic_svc.request(
            'GET', '/v1/nodes/%s?fields=inspection_started_at,'
            'provision_updated_at,provision_state' % node)
        stamps = [doc.get('inspection_started_at'),
                  doc.get('provision_updated_at')
                  if doc.get('provision_state') == 'inspect wait' else None]
        result[node] = tuple(
            datetime.datetime.fromisoformat(v).timestamp() if v else None
            for v in stamps)
    return result


def run_events(report, size, root, fixtures, count, batch_sizes=(20, 1200)):
    import random
    from pxefilterd_harness.daemon import PxefilterdRunner
    interval = 0.02 if size < 50000 else 0.1
    label = '%s ports' % env.fmt_size(size)
    with fixtures.started(size) as (ironic_svc, load), \
            env.DhcpEnv(root, 'events-%d' % size) as e:
        runner = PxefilterdRunner(
            root / ('daemon-events-%d' % size), ironic_svc.url, e.dm,
            options={'pxe_filter': {'sync_period': SYNC_PERIOD}})
        try:
            runner.start()
            runner.wait_ready(timeout=900)
            env.wait_idle(e.dm.pid())
            ev = Events(ironic_svc, load, e, runner, interval)
            rng = random.Random(size)
            with Prober(e.net, interval=interval, timeout=0.1, confirm=3,
                        max_seconds=60.0) as p:
                env.progress('events %s: inspections', label)
                ev.set_deny_unknown(True)
                ev.inspections(p, rng, count)
                anchor, anchor_mac = ev.node()
                ev.inspect(anchor, anchor_mac, p)
                env.progress('events %s: ports of an inspected node', label)
                ev.inspected_node_ports(p, count, anchor)
                env.progress('events %s: interfaces, deletions', label)
                ev.interface_changes(p, count)
                ev.deletions(p, count)
                env.progress('events %s: ports of other nodes', label)
                ev.set_deny_unknown(False)
                ev.other_node_ports(p, count)
                ironic_svc.abort(anchor)
            ev.set_deny_unknown(True)
            report.detail('events-%d' % size, ev.results)
            for size_ in batch_sizes:
                env.progress('events %s: %d nodes at once', label, size_)
                for _ in range(2 if size_ <= 20 else 1):
                    ev.batch('%d nodes enter inspection at once' % size_,
                             size_)
            code = runner.stop()
            if code != 0:
                raise RuntimeError('pxefilterd exited %s' % code)
        finally:
            runner.close()
    report.detail('events-%d' % size, ev.results)
    for kind, values in ev.results.items():
        measured = [v for v in values if v is not None]
        s = stats.summary(measured)
        missing = len(values) - len(measured)
        note = 'n=%d' % s['n'] + ('; %d not seen' % missing
                                  if missing else '')
        if 'decision' in kind:
            note += '; from ironic timestamps and the daemon decision log'
        if 'inspect wait -> decision' in kind:
            note += ('; < 0: allowed while still inspecting')
        report.add(SCENARIO_EVENTS, label, kind + ' p50', s['p50'], 's',
                   note=note)
        report.add(SCENARIO_EVENTS, label, kind + ' p95', s['p95'], 's',
                   target=None if 'ironic inspecting' in kind
                   else EVENT_TARGET)
        report.add(SCENARIO_EVENTS, label, kind + ' max', s['max'], 's')


def _kind(line):
    path = line.split(' ')[1] if ' ' in line else line
    split = urllib.parse.urlsplit(path)
    query = dict(urllib.parse.parse_qsl(split.query))
    if split.path.endswith('/nodes'):
        return 'nodes ' + query.get('provision_state', '')
    if 'sort_key' in query:
        return 'ports feed (%s)' % query['sort_key']
    if 'node_uuid' in query:
        return 'ports of a node'
    if split.path.endswith('/ports'):
        return 'full listing page'
    return 'other'


def window_cost(records, seconds):
    """``(server seconds per minute, requests per minute, by kind)``."""
    by_kind = {}
    for r in records:
        by_kind.setdefault(_kind(r.line), []).append(r.seconds)
    total = sum(r.seconds for r in records)
    scale = 60.0 / seconds
    return total * scale, len(records) * scale, {
        k: {'requests_per_min': len(v) * scale,
            'seconds_per_min': sum(v) * scale,
            'median_ms': stats.median(v) * 1000} for k, v in by_kind.items()}


def run_load(report, size, root, fixtures, window=60.0, inspected=20):
    from pxefilterd_harness.daemon import PxefilterdRunner
    from pxefilterd_harness.proxy import IronicProxy
    label = '%s ports' % env.fmt_size(size)
    result = {}
    with fixtures.started(size) as (ironic_svc, load), \
            IronicProxy(('127.0.0.1', ironic_svc.port)) as proxy, \
            env.DhcpEnv(root, 'load-%d' % size) as e:
        runner = PxefilterdRunner(
            root / ('daemon-load-%d' % size), proxy.url, e.dm,
            options={'pxe_filter': {'sync_period': SYNC_PERIOD}})
        try:
            runner.start()
            runner.wait_ready(timeout=900)
            first = proxy.take_records()
            listing = sum(r.seconds for r in first
                          if _kind(r.line) == 'full listing page')
            pages = sum(1 for r in first
                        if _kind(r.line) == 'full listing page')
            time.sleep(2)
            proxy.take_records()
            env.progress('load %s: idle for %.0f s', label, window)
            time.sleep(window)
            idle = window_cost(proxy.take_records(), window)
            nodes = load.nodes[:inspected]
            for node in nodes:
                ironic_svc.set_provision_state(node, 'inspect')
            time.sleep(5)
            proxy.take_records()
            env.progress('load %s: %d nodes inspected for %.0f s', label,
                         inspected, window)
            time.sleep(window)
            busy = window_cost(proxy.take_records(), window)
            for node in nodes:
                ironic_svc.set_provision_state(node, 'abort')
            polls = [r.seconds for r in first
                     if _kind(r.line).startswith('nodes')]
            code = runner.stop()
            if code != 0:
                raise RuntimeError('pxefilterd exited %s' % code)
        finally:
            runner.close()
    period = max(SYNC_PERIOD, listing / feed.LISTING_BUDGET)
    amortised = listing * 60.0 / period
    poll = stats.median(polls) if polls else 0.0
    before = api_bench.api_cost(listing, poll, pages=pages)['ours']
    result.update(listing=listing, pages=pages, idle=idle, busy=busy,
                  amortised_listing=amortised, before=before)
    report.detail('load-%d' % size, result)
    add = report.add
    add(SCENARIO_LOAD, label, 'one full listing (server)', listing, 's',
        note='%d pages; the next one after %.0f s: %.2f s/min'
        % (pages, period, amortised))
    add(SCENARIO_LOAD, label, 'idle: ironic time per minute',
        idle[0] + amortised, 's', baseline=before['seconds'],
        target=LOAD_TARGETS.get(size),
        note='poll + feeds %.2f s/min measured over %.0f s, + the listing '
        'spread; before: a listing every 15 s + 2 node requests a second'
        % (idle[0], window))
    add(SCENARIO_LOAD, label, 'idle: requests per minute', idle[1])
    add(SCENARIO_LOAD, label, '%d nodes inspected: ironic time per minute'
        % inspected, busy[0] + amortised, 's', baseline=before['seconds'],
        note='; '.join('%s %.2f s/min (%.0f req, median %.0f ms)'
                       % (k, v['seconds_per_min'], v['requests_per_min'],
                          v['median_ms'])
                       for k, v in sorted(busy[2].items())))
    add(SCENARIO_LOAD, label, '%d nodes inspected: requests per minute'
        % inspected, busy[1])
