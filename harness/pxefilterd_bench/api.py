"""Scenarios 2 and 3: the full port listing against a real ironic.

2. For N ports bulk-loaded into ironic's SQLite database, the same listing
   (``GET /v1/ports?fields=address,node_uuid&limit=1000``, every page) is
   made three ways, interleaved, ``reps`` times:

   - *server*: a minimal client (``urllib``, one request per page, the
     body read but not decoded) -- as close to ironic's own time as a
     client can get; JSON decoding is timed apart;
   - *pxefilterd*: ``IronicClient`` (raw JSON through the openstacksdk
     connection, validated) -- the listing alone, and ``snapshot()`` (the
     listing + the two node requests of a full sync);
   - *openstacksdk objects*: ``conn.baremetal.ports(fields=..., details=
     False)``, one Port resource per port.

   Client overhead = (client time - server time) / server time.

3. ironic time per minute: pxefilterd with the defaults (a full sync every
   15 s = the listing + 2 node requests; an inspection poll every second =
   2 node requests) against a poller that lists every port twice every
   15 s, from the measured request times (median) x request counts.
"""

import json
import time
import urllib.parse
import urllib.request

from pxefilterd import ironic as ironic_mod
from pxefilterd import policy
from pxefilterd_bench import env
from pxefilterd_bench import stats

SCENARIO_LIST = '2 full port listing against a real ironic'
SCENARIO_COST = '3 ironic API cost per minute'
OVERHEAD_TARGET = ('<=', 30.0)
PORT_FIELDS = ('address', 'node_uuid')
NODE_FIELDS = 'uuid,provision_state,inspect_interface'


class MinimalClient:
    """urllib, nothing else: what a request costs ironic, seen from
    outside.  Uses pxefilterd's microversion."""

    def __init__(self, url, microversion='%d.%d' % ironic_mod.MICROVERSION,
                 timeout=60.0):
        self.url = url.rstrip('/')
        self.headers = {'Accept': 'application/json',
                        'X-OpenStack-Ironic-API-Version': microversion}
        self.timeout = timeout

    def get(self, path):
        """GET ``path`` (or a full URL); return ``(seconds, body bytes)``."""
        url = path if path.startswith('http') else self.url + path
        req = urllib.request.Request(url, headers=self.headers)
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            body = resp.read()
        return time.perf_counter() - t0, body

    def list_ports(self, page_size=1000):
        """Every page of the port listing; return a dict of figures."""
        query = urllib.parse.urlencode({'fields': ','.join(PORT_FIELDS),
                                        'limit': page_size})
        path = '/v1/ports?' + query
        server = decode = 0.0
        pages = count = 0
        page_times = []
        while path:
            seconds, body = self.get(path)
            server += seconds
            page_times.append(seconds)
            t0 = time.perf_counter()
            doc = json.loads(body)
            decode += time.perf_counter() - t0
            pages += 1
            count += len(doc['ports'])
            path = doc.get('next')
        return {'server': server, 'decode': decode, 'pages': pages,
                'ports': count, 'page_times': page_times}

    def node_poll(self, state):
        """One inspection-poll request; return its time."""
        query = urllib.parse.urlencode({'provision_state': state,
                                        'fields': NODE_FIELDS})
        return self.get('/v1/nodes?' + query)[0]


def _timed(func):
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = func()
    return time.perf_counter() - t0, time.process_time() - cpu0, result


def sdk_objects(conn):
    return list(conn.baremetal.ports(fields=list(PORT_FIELDS),
                                     details=False))


def measure_listing(ironic_svc, size, reps):
    """Return the raw figures of scenario 2 for one running ironic."""
    client = MinimalClient(ironic_svc.url)
    conn = env.sdk_connection(ironic_svc.url)
    source = ironic_mod.IronicClient(conn)
    # warm-up: version discovery, connections, code paths
    client.list_ports()
    source.snapshot()
    list(conn.baremetal.ports(fields=list(PORT_FIELDS), details=False,
                              limit=10, paginated=False))
    runs = []
    for rep in range(reps):
        env.progress('api %s ports: round %d/%d', env.fmt_size(size),
                     rep + 1, reps)
        run = {}
        run['server'] = client.list_ports()
        polls = [client.node_poll(s) for s in
                 sorted(policy.INSPECTION_STATES)]
        run['server_polls'] = polls
        wall, cpu, pairs = _timed(source.all_ports)
        run['ours_listing'] = {'wall': wall, 'cpu': cpu, 'ports': len(pairs)}
        wall, cpu, snap = _timed(source.snapshot)
        run['ours_snapshot'] = {'wall': wall, 'cpu': cpu,
                                'ports': len(snap.ports)}
        wall, cpu, objs = _timed(lambda: sdk_objects(conn))
        run['sdk_objects'] = {'wall': wall, 'cpu': cpu, 'ports': len(objs)}
        del objs
        for key in ('ours_listing', 'ours_snapshot', 'sdk_objects'):
            if run[key]['ports'] != size:
                raise RuntimeError('%s saw %d ports, expected %d'
                                   % (key, run[key]['ports'], size))
        runs.append(run)
    return runs


def overhead_pct(client, server):
    return (client - server) / server * 100.0 if server else None


def listing_rows(report, size, runs):
    label = '%s ports' % env.fmt_size(size)
    med = stats.median
    server = med([r['server']['server'] for r in runs])
    decode = med([r['server']['decode'] for r in runs])
    pages = runs[0]['server']['pages']
    polls = med([sum(r['server_polls']) for r in runs])
    ours = med([r['ours_listing']['wall'] for r in runs])
    ours_cpu = med([r['ours_listing']['cpu'] for r in runs])
    snap = med([r['ours_snapshot']['wall'] for r in runs])
    sdk = med([r['sdk_objects']['wall'] for r in runs])
    sdk_cpu = med([r['sdk_objects']['cpu'] for r in runs])
    n = 'median of %d' % len(runs)
    add = report.add
    add(SCENARIO_LIST, label, 'server time (urllib, %d pages)' % pages,
        server, 's', note='%s; %.1f ms/page; JSON decoding %.0f ms apart'
        % (n, server / pages * 1000, decode * 1000))
    add(SCENARIO_LIST, label, 'pxefilterd IronicClient listing', ours, 's',
        baseline=server, note='client CPU %.3f s' % ours_cpu)
    add(SCENARIO_LIST, label, 'pxefilterd overhead over server',
        overhead_pct(ours, server), '%', target=OVERHEAD_TARGET,
        note='wall clock; noisy when the machine is busy')
    add(SCENARIO_LIST, label, 'pxefilterd client CPU / server time',
        ours_cpu / server * 100 if server else None, '%',
        target=OVERHEAD_TARGET, note='the part of the overhead that is '
        'our own work, immune to scheduling noise')
    add(SCENARIO_LIST, label, 'pxefilterd snapshot() (+2 node requests)',
        snap, 's', baseline=server + polls,
        note='baseline: server listing + the 2 node requests')
    add(SCENARIO_LIST, label, 'openstacksdk Port objects', sdk, 's',
        baseline=server, note='client CPU %.3f s' % sdk_cpu)
    add(SCENARIO_LIST, label, 'openstacksdk overhead over server',
        overhead_pct(sdk, server), '%')
    add(SCENARIO_LIST, label, 'openstacksdk client CPU / server time',
        sdk_cpu / server * 100 if server else None, '%')


def api_cost(listing, poll, sync_period=15.0, poll_interval=1.0,
             pages=1, poller_listings=2, poller_period=15.0):
    """ironic seconds and requests per minute (pure).

    :param listing: server seconds of one full port listing (all pages).
    :param poll: server seconds of one node request of the poll.
    :returns: ``{'ours': {...}, 'poller': {...}}`` each with ``seconds``
        and ``requests`` per minute.
    """
    syncs = 60.0 / sync_period
    polls = 60.0 / poll_interval if poll_interval else 0.0
    node_requests = 2 * syncs + 2 * polls
    ours = {'seconds': syncs * listing + node_requests * poll,
            'requests': syncs * pages + node_requests,
            'listings': syncs, 'node_requests': node_requests}
    listings = poller_listings * 60.0 / poller_period
    poller = {'seconds': listings * listing, 'requests': listings * pages,
              'listings': listings, 'node_requests': 0}
    return {'ours': ours, 'poller': poller}


def measure_cost(report, ironic_svc, size, runs, polls=30):
    """Scenario 3 from the listing figures + node request times."""
    client = MinimalClient(ironic_svc.url)
    times = {s: [client.node_poll(s) for _ in range(polls)]
             for s in sorted(policy.INSPECTION_STATES)}
    poll = stats.median([t for ts in times.values() for t in ts])
    listing = stats.median([r['server']['server'] for r in runs])
    pages = runs[0]['server']['pages']
    cost = api_cost(listing, poll, pages=pages)
    report.detail('api-cost-%d' % size, {'node_poll_times': times,
                                         'listing': listing, 'poll': poll,
                                         'cost': cost})
    label = '%s ports' % env.fmt_size(size)
    add = report.add
    add(SCENARIO_COST, label, 'one node poll request (server)', poll, 's',
        note='median of %d' % (2 * polls))
    add(SCENARIO_COST, label, 'one full listing (server)', listing, 's',
        note='%d pages' % pages)
    add(SCENARIO_COST, label, 'ironic time per minute',
        cost['ours']['seconds'], 's', baseline=cost['poller']['seconds'],
        note='ours: 4 listings + %d node requests; baseline: 8 listings'
        % cost['ours']['node_requests'])
    add(SCENARIO_COST, label, 'requests per minute', cost['ours']['requests'],
        baseline=cost['poller']['requests'])
    add(SCENARIO_COST, label, 'share of one ironic core',
        cost['ours']['seconds'] / 60.0 * 100, '%',
        note='baseline %.1f %%' % (cost['poller']['seconds'] / 60.0 * 100))
    return cost
