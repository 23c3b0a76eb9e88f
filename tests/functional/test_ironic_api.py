"""IronicClient against the fake ironic over real HTTP on 127.0.0.1."""

import logging
import threading
import time
import uuid as uuid_mod

import pytest

from pxefilterd import ironic
from pxefilterd import policy
from tests.fake_ironic import FakeIronic


@pytest.fixture
def fake():
    f = FakeIronic().start()
    f.node_ids = [f.add_node() for _ in range(10)]
    for i in range(2500):
        f.add_port(f.node_ids[i % 10],
                   '52:54:00:00:%02x:%02x' % (i // 256, i % 256))
    f.set_node(f.node_ids[1], provision_state='inspect wait')
    f.set_node(f.node_ids[2], provision_state='inspecting',
               inspect_interface='inspector')
    f.set_node(f.node_ids[3], provision_state='inspecting',
               inspect_interface='redfish')
    yield f
    f.stop()


@pytest.fixture
def client(fake):
    return fake.client(timeout=0.5, retries=1)


def test_snapshot_pages_and_filters(fake, client):
    snap = client.snapshot()
    assert len(snap.ports) == 2500
    assert snap.ports['52:54:00:00:00:01'] == fake.node_ids[1]
    in_band = policy.Options(supported_interfaces=frozenset({'agent',
                                                            'inspector'}))
    assert policy.inspected_nodes(snap, in_band) == {
        fake.node_ids[1], fake.node_ids[2]}
    port_requests = [q for p, q in fake.requests if p == '/v1/ports']
    # every page of 1000, then the empty page a full last page leads to
    assert len(port_requests) == 3
    assert all(q['fields'] == 'uuid,address,node_uuid,extra'
               for q in port_requests)


def test_every_page_of_inspecting_nodes(fake, client):
    fake.max_limit = 3
    for node in fake.node_ids:
        fake.set_node(node, provision_state='inspect wait')
    assert set(client.inspection_nodes()) == set(fake.node_ids)
    node_requests = [q for p, q in fake.requests if p == '/v1/nodes']
    assert len(node_requests) == 4 + 1      # 4 pages of inspect wait + 1


def test_inspect_wait_is_asked_for_by_its_name(fake, client):
    nodes = client.inspection_nodes()
    assert nodes[fake.node_ids[1]].provision_state == 'inspect wait'


def test_garbage_entries_are_skipped_rest_used(fake, client, caplog):
    fake.mode = 'garbage'
    snap = client.snapshot()
    assert len(snap.ports) == 2500
    assert fake.node_ids[1] in snap.nodes
    assert '52:54:00:de:ad:01' not in snap.ports
    assert 'invalid MAC address' in caplog.text


@pytest.mark.parametrize('mode', ['500', 'badjson', 'missing'])
def test_broken_answers_raise_api_error_after_retries(fake, client, mode):
    fake.mode = mode
    fake.requests.clear()
    with pytest.raises(ironic.ApiError):
        client.snapshot()
    assert len([p for p, q in fake.requests if p == '/v1/ports']) == 2


def test_slow_ironic_hits_the_request_timeout(fake, client):
    client.inspection_nodes()      # version discovery done
    fake.mode, fake.delay = 'slow', 3.0
    started = time.monotonic()
    with pytest.raises(ironic.ApiError, match='timed out'):
        client.inspection_nodes()
    # two attempts of 0.5 s each, not 2 x 3 s
    assert time.monotonic() - started < 2.9


def in_thread(func, bound=60):
    """Run ``func`` in a thread; return what it raised or returned, or
    'still running' if it has not returned within ``bound`` seconds (a
    generous bound: the test fails instead of hanging)."""
    result = ['still running']

    def run():
        try:
            result[0] = func()
        except Exception as exc:
            result[0] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    return result[0]


def test_a_trickling_ironic_hits_the_request_deadline(fake):
    """[ironic] timeout bounds the whole request, not each read: an answer
    trickled a byte at a time (each read well within the timeout) fails
    the request instead of holding it for minutes."""
    client = fake.client(timeout=1.0, retries=0)
    client.inspection_nodes()      # version discovery done
    fake.mode, fake.delay, fake.padding = 'trickle', 0.2, 1000
    outcome = in_thread(client.inspection_nodes)
    assert isinstance(outcome, ironic.ApiError), outcome
    assert 'no complete answer within 1.0 s' in str(outcome)
    fake.mode, fake.padding = 'ok', 0
    assert client.inspection_nodes() is not None   # and it recovers


def test_a_trickling_status_line_and_headers_hit_the_deadline(fake):
    client = fake.client(timeout=1.0, retries=0)
    client.inspection_nodes()      # version discovery done
    fake.mode, fake.delay = 'trickle-headers', 0.2
    outcome = in_thread(client.inspection_nodes)
    assert isinstance(outcome, ironic.ApiError), outcome
    assert 'within 1.0 s' in str(outcome)
    fake.mode = 'ok'
    assert client.inspection_nodes() is not None   # and it recovers


def test_an_oversized_answer_is_refused(fake):
    client = fake.client(page_size=10, retries=0)
    fake.padding = ironic.max_answer_bytes(10) + 1
    outcome = in_thread(client.snapshot)
    assert isinstance(outcome, ironic.ApiError), outcome
    assert 'the answer is larger than' in str(outcome)


def test_ports_of_a_node(fake, client):
    found = client.ports_of(fake.node_ids[1])
    assert len(found) == 250
    assert {node for _, node in found.values()} == {fake.node_ids[1]}


def test_ports_of_a_deleted_node_say_it_is_gone(fake, client):
    node = fake.node_ids[4]
    fake.delete_node(node)
    fake.requests.clear()
    with pytest.raises(ironic.NodeGone) as info:
        client.ports_of(node)
    assert info.value.node == node
    # a 404 is an answer: no retry
    assert len([p for p, q in fake.requests if p == '/v1/ports']) == 1


def test_a_marker_deleted_mid_listing_goes_back_a_page(fake, client):
    fake.max_limit = 1000
    pages = client.pages('/ports', {'fields': 'uuid'})
    first = next(pages)
    fake.delete_port(first['ports'][-1]['uuid'])
    rest = list(pages)
    seen = {p['uuid'] for body in [first] + rest for p in body['ports']}
    assert len(seen) == 2500


def test_older_ironic_is_a_clear_version_error(fake):
    fake.max_version = (1, 38)
    client = fake.client()
    with pytest.raises(ironic.VersionError,
                       match=r'up to 1\.38; pxefilterd needs 1\.39'):
        client.inspection_nodes()


def test_unreachable_ironic_is_an_api_error():
    client = FakeIronic().client()     # never started: connection refused
    with pytest.raises(ironic.ApiError):
        client.snapshot()


@pytest.mark.parametrize('scope, version', [
    ((), '1.39'), (('conductor_group',), '1.46'), (('shard',), '1.82'),
    (('shard', 'conductor_group'), '1.82')])
def test_a_scoped_client_asks_the_fields_and_version_it_needs(scope, version):
    f = FakeIronic().start()
    try:
        node = f.add_node('inspect wait', shard='rack-1',
                          conductor_group='east')
        client = f.client(shard=['rack-1'] * ('shard' in scope),
                          conductor_group=['east'] * ('conductor_group'
                                                      in scope))
        nodes = client.inspection_nodes({'inspect wait'})
        info = nodes[node]
        assert info.shard == ('rack-1' if 'shard' in scope else None)
        assert info.conductor_group == ('east' if 'conductor_group' in scope
                                        else None)
        path, query = f.requests[-1]
        assert query['fields'].split(',')[3:] == sorted(scope)
        assert f.versions[-1] == version
    finally:
        f.stop()


def test_an_ironic_too_old_for_shards_is_a_clear_error():
    f = FakeIronic(max_version=(1, 81)).start()
    try:
        f.add_node('inspect wait')
        client = f.client(shard=['rack-1'])
        with pytest.raises(ironic.VersionError,
                           match=r"up to 1\.81; pxefilterd needs 1\.82 "
                                 r"\(the node field 'shard' \(\[pxe_filter\] "
                                 r"shard\)\)"):
            client.inspection_nodes({'inspect wait'})
    finally:
        f.stop()


IB_ID = 'ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:01'


def test_an_infiniband_port_has_its_client_id_as_a_second_key(caplog):
    f = FakeIronic().start()
    try:
        node = f.add_node()
        ib = f.add_port(node, '00:02:c9:0a:0b:01',
                        extra={'client-id': IB_ID.upper()})
        bad = f.add_port(node, '00:02:c9:0a:0b:02',
                         extra={'client-id': 'not hex'})
        plain = f.add_port(node, '52:54:00:00:00:01')
        listing = f.client().listing(lambda: 0)
        assert listing.ports == {
            ib + '/client-id': ('id:' + IB_ID, node),
            ib: ('00:02:c9:0a:0b:01', node),
            bad: ('00:02:c9:0a:0b:02', node),       # its MAC still counts
            plain: ('52:54:00:00:00:01', node)}
        assert "Port %s: its extra client-id 'not hex' is not a client id" \
            % bad in caplog.text
        assert f.client().ports_of(node) == listing.ports
    finally:
        f.stop()


FORGED = '\npxefilterd exiting with status 0: forged'


def test_no_log_line_is_forged_by_what_ironic_sends(caplog):
    """Line breaks in a port's uuid, its node_uuid, a node's fields or an
    error body reach no log line and no error message raw: the entry is
    skipped (and logged as a repr), the rest is used."""
    f = FakeIronic().start()
    try:
        node = f.add_node(provision_state='inspect wait')
        odd = f.add_node(provision_state='inspect wait',
                         inspect_interface='agent' + FORGED)
        f.add_port(node, '52:54:00:00:00:01', uuid='x' + FORGED)
        f.add_port(node, '52:54:00:00:00:01', uuid=str(uuid_mod.uuid4()))
        bad_node = f.add_port(None, '52:54:00:00:00:02')
        f.set_port(bad_node, node_uuid=node + FORGED)
        f.add_port(odd, '52:54:00:00:00:03')
        caplog.set_level(logging.DEBUG, logger='pxefilterd')
        snap = f.client().snapshot()
        assert snap.ports == {'52:54:00:00:00:01': node,
                              '52:54:00:00:00:03': odd}
        assert set(snap.nodes) == {node}
        f._misbehave = lambda path: (500, ('oops' + FORGED).encode())
        with pytest.raises(ironic.ApiError) as exc:
            f.client().snapshot()
        assert 'pxefilterd exiting' in str(exc.value)
        assert '\n' not in str(exc.value)
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if 'Skipping' in m]) == 3
        for message in messages:
            assert '\n' not in message, message
    finally:
        f.stop()
