"""Prometheus metrics: a real HTTP server on 127.0.0.1, scraped with urllib."""

import dataclasses
import os
import socket
import threading
import time
import types
import urllib.request

from oslo_config import cfg
from prometheus_client import parser
import pytest

from pxefilterd import conf as pxf_conf
from pxefilterd import metrics
from pxefilterd import service
from tests.waiting import wait_for


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_conf(enabled=True, port=None):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf([], project='pxefilterd', default_config_files=[],
         default_config_dirs=[])
    conf.set_override('enabled', enabled, group='metrics')
    conf.set_override('listen_address', '127.0.0.1', group='metrics')
    conf.set_override('listen_port', port or free_port(), group='metrics')
    return conf


def fake_service(with_hook=False):
    stats = service.Stats(allowed=2, denied=40, unknown='allow',
                          last_sync=1700000000.5, last_sync_duration=0.25,
                          syncs=12, api_errors=3, heals=1,
                          dnsmasq_running=True, failed_closed=False,
                          last_contact=1700000001.0, ports=1234,
                          inspected=5, dnsmasq_state='running',
                          dnsmasq_starts=2)
    svc = types.SimpleNamespace(stats=stats,
                                store=types.SimpleNamespace(files_written=57))
    if with_hook:
        svc.sync_observers = []
    return svc


def scrape(server):
    host, port = server.server_address[:2]
    with urllib.request.urlopen('http://%s:%d/metrics' % (host, port),
                                timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples = {}
    types_ = {}
    for family in parser.text_string_to_metric_families(text):
        types_[family.name] = family.type
        for s in family.samples:
            key = s.name + ''.join(
                ',%s=%s' % kv for kv in sorted(s.labels.items()))
            samples[key] = s.value
    return samples, types_


@pytest.fixture
def serve():
    servers = []

    def start(conf, svc):
        server = metrics.start_server(conf, svc)
        if server is not None:
            servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_disabled_returns_none(serve):
    assert serve(make_conf(enabled=False), fake_service()) is None


def test_scrape_every_metric(serve):
    svc = fake_service()
    server = serve(make_conf(), svc)
    samples, types_ = scrape(server)
    assert samples['pxefilterd_macs,state=allowed'] == 2
    assert samples['pxefilterd_macs,state=denied'] == 40
    assert samples['pxefilterd_unknown_allowed'] == 1
    assert samples['pxefilterd_failed_closed'] == 0
    assert samples['pxefilterd_dnsmasq_running'] == 1
    assert samples['pxefilterd_syncs_total'] == 12
    assert samples['pxefilterd_api_errors_total'] == 3
    assert samples['pxefilterd_heals_total'] == 1
    assert samples['pxefilterd_files_written_total'] == 57
    assert samples[
        'pxefilterd_last_successful_sync_timestamp_seconds'] == 1700000000.5
    assert samples['pxefilterd_sync_duration_seconds'] == 0.25
    assert samples['pxefilterd_last_contact_timestamp_seconds'] == \
        1700000001.0
    assert samples['pxefilterd_ironic_ports'] == 1234
    assert samples['pxefilterd_inspected_nodes'] == 5
    assert samples['pxefilterd_dnsmasq_state,state=running'] == 1
    assert samples['pxefilterd_dnsmasq_state,state=gone'] == 0
    assert samples['pxefilterd_dnsmasq_starts_total'] == 2
    assert types_['pxefilterd_syncs'] == 'counter'
    assert types_['pxefilterd_macs'] == 'gauge'
    assert types_['pxefilterd_sync_duration_seconds'] == 'gauge'
    # process metrics come along
    assert 'process_open_fds' in samples

    # values are read at scrape time, not copied at start
    svc.stats.unknown = 'deny'
    svc.stats.failed_closed = True
    svc.stats.dnsmasq_running = False
    svc.stats.syncs = 13
    svc.store.files_written = 60
    samples, _ = scrape(server)
    assert samples['pxefilterd_unknown_allowed'] == 0
    assert samples['pxefilterd_failed_closed'] == 1
    assert samples['pxefilterd_dnsmasq_running'] == 0
    assert samples['pxefilterd_syncs_total'] == 13
    assert samples['pxefilterd_files_written_total'] == 60


def test_histogram_when_the_service_offers_sync_observers(serve):
    svc = fake_service(with_hook=True)
    server = serve(make_conf(), svc)
    assert len(svc.sync_observers) == 1
    svc.sync_observers[0](0.3)
    svc.sync_observers[0](7.0)
    samples, types_ = scrape(server)
    assert types_['pxefilterd_sync_duration_seconds'] == 'histogram'
    assert samples['pxefilterd_sync_duration_seconds_count'] == 2
    assert samples['pxefilterd_sync_duration_seconds_sum'] == 7.3
    assert samples['pxefilterd_sync_duration_seconds_bucket,le=0.5'] == 1
    assert samples['pxefilterd_sync_duration_seconds_bucket,le=10.0'] == 2
    assert 'pxefilterd_sync_duration_seconds' not in samples


def test_port_in_use_raises(serve):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        conf = make_conf(port=s.getsockname()[1])
        with pytest.raises(OSError):
            serve(conf, fake_service())


def test_every_stats_field_is_exported():
    # A new Stats field must be added to the collector (or here, on purpose).
    exported = {'allowed', 'denied', 'unknown', 'last_sync',
                'last_sync_duration', 'syncs', 'api_errors', 'heals',
                'dnsmasq_running', 'failed_closed', 'last_contact', 'ports',
                'inspected', 'dnsmasq_state', 'dnsmasq_starts',
                # text for status lines, not a metric:
                'dnsmasq_detail'}
    assert {f.name for f in dataclasses.fields(service.Stats)} == exported


# -- a side service never takes the daemon down (security review) ---------

def open_fds():
    return len(os.listdir('/proc/self/fd'))


def test_idle_connections_hold_no_thread_and_no_more_than_the_cap(
        serve, monkeypatch):
    """About 1,000 idle connections used to start 1,000 threads holding
    1,000 descriptors (and the daemon then died of EMFILE): now they cost
    no thread, and at most MAX_CONNECTIONS descriptors."""
    monkeypatch.setattr(metrics, 'DEADLINE', 1.0, raising=False)
    server = serve(make_conf(), fake_service())
    scrape(server)
    threads, fds = threading.active_count(), open_fds()
    host, port = server.server_address[:2]
    clients = []
    try:
        for _ in range(200):
            clients.append(socket.create_connection((host, port)))
        time.sleep(0.3)
        assert threading.active_count() <= threads
        # each client holds one descriptor here; the server no more than
        # its cap (plus one being accepted)
        assert open_fds() - fds - len(clients) <= metrics.MAX_CONNECTIONS + 1
        assert server.open_connections() <= metrics.MAX_CONNECTIONS
    finally:
        for c in clients:
            c.close()
    # the idle ones are closed at their deadline; scrapes work again
    wait_for(lambda: server.open_connections() == 0, timeout=10)
    samples, _ = scrape(server)
    assert samples['pxefilterd_macs,state=denied'] == 40


def test_a_trickling_client_is_closed_at_the_deadline(serve, monkeypatch):
    monkeypatch.setattr(metrics, 'DEADLINE', 1.0, raising=False)
    server = serve(make_conf(), fake_service())
    host, port = server.server_address[:2]
    with socket.create_connection((host, port)) as c:
        c.settimeout(0.2)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 6 and not closed:
            try:
                c.sendall(b'G')
                closed = c.recv(1) == b''
            except socket.timeout:
                pass
            except OSError:
                closed = True
    assert closed, 'a client sending a byte every 0.2 s was never cut off'


def test_only_get_and_whole_requests_are_answered(serve):
    server = serve(make_conf(), fake_service())
    host, port = server.server_address[:2]
    for request, status in ((b'POST /metrics HTTP/1.1\r\n\r\n', b'405'),
                            (b'GET /metrics HTTP/1.1\r\n', b'400'),
                            (b'x' * 20000, b'400')):
        with socket.create_connection((host, port), timeout=5) as c:
            c.sendall(request)
            c.shutdown(socket.SHUT_WR)
            answer = c.makefile('rb').readline()
        assert answer.split()[1] == status, answer
