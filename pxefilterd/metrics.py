"""Prometheus metrics, read from a running :class:`pxefilterd.service.Service`.

Nothing is pushed or counted twice: a custom collector reads the service's
``stats`` and ``store.files_written`` at scrape time.  Exposed::

    pxefilterd_macs{state="allowed"|"denied"}          gauge
    pxefilterd_unknown_allowed                         gauge (0/1)
    pxefilterd_failed_closed                           gauge (0/1)
    pxefilterd_dnsmasq_running                         gauge (0/1)
    pxefilterd_syncs_total                             counter
    pxefilterd_api_errors_total                        counter
    pxefilterd_heals_total                             counter
    pxefilterd_files_written_total                     counter
    pxefilterd_last_successful_sync_timestamp_seconds  gauge (0: never)
    pxefilterd_sync_duration_seconds                   histogram, or gauge

``pxefilterd_sync_duration_seconds`` is a histogram of full syncs when the
service offers a ``sync_observers`` list (callables given the duration of
each full sync); otherwise it is a gauge of the last full sync's duration.

The HTTP server is bounded (see :class:`MetricsServer`): no client can make
it hold more than a few dozen descriptors or any thread beyond its own two.

Reading ``stats`` from the HTTP thread without a lock is safe: each field
is one attribute read, and a scrape may at worst mix two consecutive syncs.
"""

import logging
import socket
import urllib.parse

import prometheus_client
from prometheus_client import core
from prometheus_client import exposition

from pxefilterd import sockserve

LOG = logging.getLogger(__name__)

#: Buckets (seconds) for full sync durations: ~ms for a few ports to tens of
#: seconds for 100k ports on a slow ironic.
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0)
#: Open connections at most; more are accepted and closed at once.
MAX_CONNECTIONS = 32
#: Seconds from accept to the end of the answer, whatever the client does.
DEADLINE = 5.0
#: Longest request head accepted (bytes).
MAX_REQUEST = 8192


class ServiceCollector(prometheus_client.registry.Collector):
    """Collects the metrics of one service object.

    :param svc: has ``stats`` (:class:`pxefilterd.service.Stats`) and
        ``store.files_written``.
    :param histogram: optional prometheus Histogram fed with full sync
        durations; when None the last duration is exported as a gauge.
    """

    def __init__(self, svc, histogram=None):
        self._svc = svc
        self._histogram = histogram

    def describe(self):
        # Returning the metrics here would run collect() at registration;
        # an empty description keeps registration side-effect free.
        return []

    def collect(self):
        """Yield the metric families; never raises for a missing field."""
        s = self._svc.stats
        macs = core.GaugeMetricFamily(
            'pxefilterd_macs', 'MACs with a hostsdir file, by state.',
            labels=['state'])
        macs.add_metric(['allowed'], s.allowed)
        macs.add_metric(['denied'], s.denied)
        yield macs
        yield core.GaugeMetricFamily(
            'pxefilterd_unknown_allowed',
            '1 when MACs unknown to ironic may PXE boot, else 0.',
            value=1 if s.unknown == 'allow' else 0)
        yield core.GaugeMetricFamily(
            'pxefilterd_failed_closed',
            '1 while every MAC is denied because ironic has not answered '
            'for max_stale_seconds.', value=1 if s.failed_closed else 0)
        yield core.GaugeMetricFamily(
            'pxefilterd_dnsmasq_running',
            '1 when dnsmasq runs: seen in its pid file, or (without '
            'dnsmasq_pid_file) started and not stopped by pxefilterd.',
            value=1 if s.dnsmasq_running else 0)
        state = core.GaugeMetricFamily(
            'pxefilterd_dnsmasq_state',
            'What pxefilterd sees of dnsmasq: 1 for the current state.',
            labels=['state'])
        current = s.dnsmasq_state.split(' (')[0].replace(' ', '_')
        for name in ('running', 'starting', 'gone', 'stopped', 'unknown',
                     'not_observed'):
            state.add_metric([name], 1 if name == current else 0)
        yield state
        yield core.CounterMetricFamily(
            'pxefilterd_dnsmasq_starts',
            'Successful runs of the dnsmasq start command (restarts '
            'included).', value=s.dnsmasq_starts)
        yield core.CounterMetricFamily(
            'pxefilterd_syncs', 'Successful full port listings of ironic.',
            value=s.syncs)
        yield core.CounterMetricFamily(
            'pxefilterd_api_errors',
            'Listings or polls cut short by ironic errors (after retries).',
            value=s.api_errors)
        yield core.CounterMetricFamily(
            'pxefilterd_heals',
            'Hostsdir files changed by someone else and repaired.',
            value=s.heals)
        store = getattr(self._svc, 'store', None)
        yield core.CounterMetricFamily(
            'pxefilterd_files_written', 'Hostsdir files written.',
            value=getattr(store, 'files_written', 0))
        yield core.GaugeMetricFamily(
            'pxefilterd_last_successful_sync_timestamp_seconds',
            'Unix time of the last successful full port listing (0: none '
            'yet).',
            value=s.last_sync)
        yield core.GaugeMetricFamily(
            'pxefilterd_last_contact_timestamp_seconds',
            'Unix time of the last complete inspection poll of ironic '
            '(0: none yet); max_stale_seconds counts from it.',
            value=s.last_contact)
        yield core.GaugeMetricFamily(
            'pxefilterd_ironic_ports',
            'Ports pxefilterd knows of in ironic.', value=s.ports)
        yield core.GaugeMetricFamily(
            'pxefilterd_inspected_nodes',
            'Nodes under in-band inspection whose ports may boot.',
            value=s.inspected)
        if self._histogram is None:
            yield core.GaugeMetricFamily(
                'pxefilterd_sync_duration_seconds',
                'Duration of the last successful full port listing.',
                value=s.last_sync_duration)


def make_registry(svc):
    """Return a CollectorRegistry with the service's metrics.

    Also registers the process and platform collectors (memory, CPU, open
    file descriptors, Python version).  When ``svc`` has a
    ``sync_observers`` list, a histogram's ``observe`` is appended to it.
    """
    registry = prometheus_client.CollectorRegistry()
    histogram = None
    observers = getattr(svc, 'sync_observers', None)
    if isinstance(observers, list):
        histogram = prometheus_client.Histogram(
            'pxefilterd_sync_duration_seconds',
            'Duration of successful full port listings of ironic.',
            buckets=SYNC_BUCKETS, registry=registry)
        observers.append(histogram.observe)
    registry.register(ServiceCollector(svc, histogram))
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """The metrics endpoint: a :class:`sockserve.BoundedServer` speaking
    just enough HTTP/1.0 for a Prometheus scrape.

    Bounded like every side service (see :mod:`pxefilterd.sockserve`): at
    most :data:`MAX_CONNECTIONS` open connections, :data:`DEADLINE` seconds
    each from accept to the last byte of the answer, one serving thread and
    one worker whatever the clients do.  A scrape costs one request per
    connection (``Connection: close``).
    """

    def __init__(self, registry, address, port):
        self._registry = registry
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        listener = socket.create_server((address, port), family=family,
                                        backlog=64)
        self.server_address = listener.getsockname()
        self._server = sockserve.BoundedServer(
            listener, b'\r\n\r\n', self.answer, name='metrics-http',
            max_connections=MAX_CONNECTIONS, deadline=DEADLINE,
            max_request=MAX_REQUEST, workers=1)
        self._server.start()

    def alive(self):
        return self._server.alive()

    def open_connections(self):
        return self._server.open_connections()

    def shutdown(self):
        """Stop serving; idempotent."""
        self._server.close()

    def server_close(self):
        self._server.close()

    def answer(self, request):
        """Return the HTTP answer (bytes) to one request (bytes)."""
        head = request.split(b'\r\n\r\n', 1)[0]
        lines = head.split(b'\r\n')
        parts = lines[0].split()
        if len(request) > MAX_REQUEST or b'\r\n\r\n' not in request:
            return _http(400, b'incomplete or oversized request\n')
        if len(parts) != 3 or parts[0] not in (b'GET', b'HEAD'):
            return _http(405, b'only GET and HEAD\n')
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b':')
            headers[name.strip().lower()] = value.strip().decode(
                'latin-1')
        registry = self._registry
        query = urllib.parse.parse_qs(
            urllib.parse.urlsplit(parts[1].decode('latin-1')).query)
        if 'name[]' in query:
            registry = registry.restricted_registry(query['name[]'])
        encoder, content_type = exposition.choose_encoder(
            headers.get(b'accept', ''))
        body = encoder(registry)
        return _http(200, body, content_type,
                     head_only=parts[0] == b'HEAD')


def _http(code, body, content_type='text/plain; charset=utf-8',
          head_only=False):
    reason = {200: 'OK', 400: 'Bad Request',
              405: 'Method Not Allowed'}[code]
    head = ('HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n'
            'Connection: close\r\n\r\n'
            % (code, reason, content_type, len(body))).encode('latin-1')
    return head if head_only else head + body


def start_server(conf, svc):
    """Serve ``svc``'s metrics over HTTP if ``[metrics] enabled``.

    The server runs in a daemon thread on ``[metrics] listen_address`` and
    ``listen_port``; call ``shutdown()`` on it to stop it.

    :returns: the :class:`MetricsServer`, or None when metrics are
        disabled.
    :raises OSError: the address cannot be bound (e.g. port in use).
    """
    group = conf.metrics
    if not group.enabled:
        return None
    registry = make_registry(svc)
    server = MetricsServer(registry, group.listen_address, group.listen_port)
    LOG.info('Serving metrics on http://%s:%d/metrics',
             group.listen_address, group.listen_port)
    return server
