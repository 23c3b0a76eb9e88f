"""IronicSource against a fake ironic over real HTTP on 127.0.0.1."""

import time

from oslo_config import cfg
import pytest

from pxefilterd import conf as pxf_conf
from pxefilterd import ironic
from tests.fake_ironic import FakeIronic


@pytest.fixture
def fake():
    f = FakeIronic().start()
    for i in range(2500):
        f.ports['52:54:00:00:%02x:%02x' % (i // 256, i % 256)] = \
            'node-%d' % (i % 10)
    f.nodes['node-1'] = ('inspect wait', 'agent')
    f.nodes['node-2'] = ('inspecting', 'inspector')
    f.nodes['node-3'] = ('inspecting', 'redfish')   # out-of-band: no PXE
    f.nodes['node-4'] = ('manageable', 'agent')
    yield f
    f.stop()


@pytest.fixture
def source(fake, tmp_path):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    path = tmp_path / 'pxefilterd.conf'
    path.write_text('[ironic]\nauth_type = none\nendpoint_override = %s\n'
                    'timeout = 0.5\napi_retries = 1\n'
                    'api_retry_interval = 0.01\n' % fake.url)
    conf(['--config-file', str(path)], project='pxefilterd')
    return ironic.IronicSource.from_conf(conf)


def test_snapshot_pages_and_filters(fake, source):
    snap = source.snapshot()
    assert len(snap.ports) == 2500
    assert snap.ports['52:54:00:00:00:01'] == 'node-1'
    assert snap.inspecting == {'node-1', 'node-2'}
    port_requests = [q for p, q in fake.requests if p == '/v1/ports']
    # one listing per sync: three pages of 1000, only the fields needed
    assert len(port_requests) == 3
    assert all(q['fields'] == 'address,node_uuid' for q in port_requests)


def test_garbage_entries_are_skipped_rest_used(fake, source, caplog):
    fake.mode = 'garbage'
    snap = source.snapshot()
    assert len(snap.ports) == 2500
    assert snap.inspecting == {'node-1', 'node-2'}
    assert source.last_skipped > 0
    assert '52:54:00:de:ad:01' not in snap.ports
    assert 'invalid MAC address' in caplog.text


@pytest.mark.parametrize('mode', ['500', 'badjson', 'missing'])
def test_broken_answers_raise_api_error_after_retries(fake, source, mode):
    fake.mode = mode
    fake.requests.clear()
    with pytest.raises(ironic.ApiError):
        source.snapshot()
    assert len([p for p, q in fake.requests if p == '/v1/ports']) == 2


def test_slow_ironic_hits_the_request_timeout(fake, source):
    fake.mode, fake.delay = 'slow', 3.0
    started = time.monotonic()
    with pytest.raises(ironic.ApiError, match='timed out'):
        source.inspecting()
    # two attempts of 0.5 s each, not 2 x 3 s
    assert time.monotonic() - started < 2.9


def test_ports_of_nodes(fake, source):
    found = source.ports_of({'node-1'})
    assert len(found) == 250
    assert set(found.values()) == {'node-1'}


def test_unreachable_ironic_is_an_api_error(tmp_path):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    path = tmp_path / 'pxefilterd.conf'
    path.write_text('[ironic]\nauth_type = none\n'
                    'endpoint_override = http://127.0.0.1:9\n'
                    'timeout = 0.5\napi_retries = 0\n')
    conf(['--config-file', str(path)], project='pxefilterd')
    with pytest.raises(ironic.ApiError):
        ironic.IronicSource.from_conf(conf).snapshot()
