"""The fake ironic (tests/fake_ironic.py) against a real ironic 39.

The unit and functional tests trust the fake; this keeps it honest.  The
same nodes and ports (same UUIDs, same order, same updates) are created in
both, then the same requests -- every kind pxefilterd makes, and the errors
it must understand -- go to both, and the answers are compared: status
codes, page sizes, ``next`` links, the order of the items, their fields,
and the error bodies.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuid_mod

import pytest

from tests.fake_ironic import FakeIronic

MAX_LIMIT = 5
GONE = '6a1d1f0e-0000-4000-8000-00000000dead'


def ask(base, path, version='1.39'):
    """GET ``base + path``; return ``(status, decoded body)``."""
    headers = {'Accept': 'application/json'}
    if version:
        headers['X-OpenStack-Ironic-API-Version'] = version
    req = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b'{}')
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b'{}')


def normalise(base, status, body):
    """What must match: status, items (fields; timestamps as present or
    null; any power state), ``next`` as a query, error messages."""
    if status != 200:
        message = json.loads(body['error_message'])
        return status, {k: v for k, v in message.items()
                        if k in ('faultcode', 'faultstring', 'code',
                                 'title')}
    result = {}
    for key, value in body.items():
        if key == 'next':
            split = urllib.parse.urlsplit(value)
            result['next'] = (split.path,
                              dict(urllib.parse.parse_qsl(split.query)))
        elif isinstance(value, list):
            items = []
            for item in value:
                item = dict(item)
                links = item.pop('links', [])
                item['links'] = sorted(
                    (link['rel'], link['href'].replace(base, ''))
                    for link in links)
                for stamp in ('created_at', 'updated_at'):
                    if stamp in item:
                        item[stamp] = item[stamp] is not None
                if 'power_state' in item:   # the fake driver's business
                    item['power_state'] = '<any>'
                items.append(item)
            result[key] = items
    return status, result


def walk(base, path, max_pages=50):
    """Every page of a listing: ``[(status, normalised page)]``."""
    pages = []
    while path and len(pages) < max_pages:
        status, body = ask(base, path)
        pages.append(normalise(base, status, body))
        nxt = body.get('next') if status == 200 else None
        path = nxt.replace(base, '') if nxt else None
    return pages


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """A real ironic and the fake, with the same nodes and ports."""
    from pxefilterd_harness import preflight
    from pxefilterd_harness.ironic import IronicService

    problem = preflight.ironic_problem()
    if problem:
        pytest.skip(problem)
    real = IronicService(tmp_path_factory.mktemp('contract-ironic'),
                         max_limit=MAX_LIMIT)
    fake = FakeIronic(max_limit=MAX_LIMIT).start()
    try:
        real.start()
        nodes = [str(uuid_mod.uuid4()) for _ in range(3)]
        for i, node in enumerate(nodes):
            real.request('POST', '/v1/nodes', {
                'uuid': node, 'name': 'contract-%d' % i,
                'driver': 'fake-hardware', 'inspect_interface': 'agent'})
            real.set_provision_state(node, 'manage')
            real.wait_for_state(node, 'manageable')
            fake.add_node('manageable', 'agent', uuid=node,
                          name='contract-%d' % i)
        real.inspect(nodes[0])
        fake.set_node(nodes[0], provision_state='inspect wait')
        ports = []
        for i in range(10):
            port = str(uuid_mod.uuid4())
            address = '52:54:00:00:0c:%02x' % i
            real.request('POST', '/v1/ports', {
                'uuid': port, 'address': address,
                'node_uuid': nodes[i % 3]})
            fake.add_port(nodes[i % 3], address, uuid=port)
            ports.append(port)
        for port, address in ((ports[6], '52:54:00:00:0c:f6'),
                              (ports[2], '52:54:00:00:0c:f2')):
            real.patch_port(port, address=address)
            fake.set_port(port, address=address)
        yield real, fake, nodes, ports
    finally:
        fake.stop()
        real.close()


LISTINGS = [
    '/v1/ports?fields=uuid,address,node_uuid',
    '/v1/ports?fields=uuid,address,node_uuid&limit=2000',
    '/v1/ports?fields=uuid,address,node_uuid&limit=3',
    '/v1/ports?sort_key=id&sort_dir=desc&limit=4&fields=uuid,address,'
    'node_uuid',
    '/v1/ports?sort_key=created_at&sort_dir=desc&limit=4&fields=uuid,'
    'created_at',
    '/v1/nodes?provision_state=inspect%20wait&fields=uuid,provision_state,'
    'inspect_interface',
    '/v1/nodes?provision_state=inspecting&fields=uuid,provision_state,'
    'inspect_interface',
    '/v1/nodes?fields=uuid,provision_state&limit=2',
    '/v1/nodes?limit=2',
    '/v1/ports?limit=4',
    '/v1/ports?fields=uuid,created_at,updated_at,extra,pxe_enabled&limit=4',
    # pxefilterd-ctl explain without a daemon
    '/v1/ports?address=52:54:00:00:0c:01&fields=uuid,address,node_uuid',
    '/v1/ports?address=52:54:00:00:0C:03&fields=uuid,address,node_uuid',
    '/v1/ports?address=52:54:00:00:0c:ee&fields=uuid,address,node_uuid',
]


@pytest.mark.parametrize('path', LISTINGS)
def test_listings_page_and_sort_alike(pair, path):
    real, fake, _, _ = pair
    assert walk(fake.url, path) == walk(real.url, path)


def test_changed_ports_feed(pair):
    """Newest updates first, then the never-updated ports; after a marker
    that was updated, never-updated ports do not come back (SQL NULLs).
    (Paging on from a never-updated marker repeats items in real ironic;
    the feed never does that.)"""
    real, fake, _, _ = pair
    path = ('/v1/ports?sort_key=updated_at&sort_dir=desc&limit=3&fields='
            'uuid,address,node_uuid,updated_at')
    assert walk(fake.url, path, max_pages=1) == \
        walk(real.url, path, max_pages=1)
    path = path.replace('limit=3', 'limit=2')
    assert walk(fake.url, path, max_pages=2) == \
        walk(real.url, path, max_pages=2)


def test_node_filter_of_ports(pair):
    real, fake, nodes, _ = pair
    for node in (nodes[1], GONE):
        path = '/v1/ports?node_uuid=%s&fields=uuid,address' % node
        assert walk(fake.url, path) == walk(real.url, path)


ERRORS = [
    '/v1/ports?node_uuid=%s' % GONE,
    '/v1/ports?node=%s' % GONE,
    '/v1/ports?marker=%s' % GONE,
    '/v1/ports?sort_key=bogus',
    '/v1/ports?sort_key=extra',
    '/v1/ports?sort_dir=sideways',
    '/v1/ports?fields=address,bogus',
    '/v1/ports?limit=0',
    '/v1/ports?fields=uuid,physical_network',
    '/v1/nodes?fields=uuid,updated_at',
    '/v1/nodes?fields=uuid,shard',
    '/v1/nodes?sort_key=bogus',
    '/v1/nodes?provision_state=bogus',
    '/v1/ports?address=not-a-mac',
    '/v1/ports?address=52-54-00-00-0c-01',
]


@pytest.mark.parametrize('path', ERRORS)
def test_errors_have_the_same_status_and_message(pair, path):
    real, fake, _, _ = pair
    assert normalise(fake.url, *ask(fake.url, path)) == \
        normalise(real.url, *ask(real.url, path))


def test_listing_from_a_marker(pair):
    real, fake, _, ports = pair
    path = '/v1/ports?marker=%s&limit=2' % ports[3]
    assert walk(fake.url, path) == walk(real.url, path)


def test_too_new_a_microversion_is_406(pair):
    real, fake, _, _ = pair
    got = [ask(base, '/v1/ports', version='1.999') for base in
           (fake.url, real.url)]
    assert got[0][0] == got[1][0] == 406
    assert (json.loads(got[0][1]['error_message'])['title']
            == json.loads(got[1][1]['error_message'])['title'])


def test_inspect_wait_shows_as_inspecting_below_1_39(pair):
    real, fake, _, _ = pair
    path = ('/v1/nodes?provision_state=inspect%20wait&fields=uuid,'
            'provision_state')
    answers = [ask(base, path, version='1.31')[1]['nodes']
               for base in (fake.url, real.url)]
    assert [n['provision_state'] for n in answers[0]] == \
        [n['provision_state'] for n in answers[1]] == ['inspecting']


def test_version_documents_name_the_newest_microversion(pair):
    real, fake, _, _ = pair
    for base in (fake.url, real.url):
        status, body = ask(base, '/', version=None)
        assert status == 200
        assert body['default_version']['version'] == '1.115'
