"""Property-based tests for everything that comes from the API or the disk.

Invariants: nothing is written outside the hostsdir; every file there holds
exactly one of the four valid lowercase forms for its name; uppercase and
dashed MACs are normalised consistently; no input raises.
"""

import dataclasses
import logging
import os
import shutil
import string
import tempfile

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import repair
from pxefilterd import view

HEX = '0123456789abcdefABCDEF'
octet = st.text(alphabet=HEX, min_size=2, max_size=2)


def mac_like(n):
    return st.builds(lambda parts, sep: sep.join(parts),
                     st.lists(octet, min_size=n, max_size=n),
                     st.sampled_from([':', '-', '', '.', ' ']))


hostile_fragments = st.sampled_from([
    '../', '/', '\x00', '\n', '\r\n', ',', ',ignore', ',IGNORE', ',set:x',
    ',tag:x', ',198.51.100.50', ' ', '*', '..', '~', '#', '\t', 'é'])

hostile_address = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
    mac_like(6), mac_like(8), mac_like(20), mac_like(5),
    st.builds(lambda m, f, front: (f + m) if front else (m + f),
              mac_like(6), hostile_fragments, st.booleans()),
    st.text(alphabet=string.printable + '\x00é', max_size=40),
)

NODES = ['aaaaaaaa-0000-4000-8000-00000000000%d' % i for i in (1, 2, 3)]
PORTS = ['bbbbbbbb-0000-4000-8000-00000000000%d' % i for i in range(8)]
hostile_uuid = st.one_of(
    st.sampled_from(PORTS), st.none(), st.integers(), st.text(max_size=40),
    st.sampled_from([PORTS[0].upper(), PORTS[0] + '\n', '../' + PORTS[0],
                     PORTS[0][:-1]]))

port_entry = st.one_of(
    st.fixed_dictionaries({'uuid': hostile_uuid,
                           'address': hostile_address,
                           'node_uuid': st.one_of(
                               st.none(), st.sampled_from(NODES),
                               st.integers(), st.text(max_size=5),
                               st.just(NODES[0].upper()))}),
    st.none(), st.integers(), st.text(max_size=5),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)

VALID = {(action, wildcard) for action in policy.Action
         for wildcard in (False, True)}


def check_directory(parent, store):
    assert sorted(os.listdir(parent)) == sorted(
        [os.path.basename(store.path), os.path.basename(store.staging)])
    assert sorted(os.listdir(store.staging)) == ['lock']
    for name in os.listdir(store.path):
        key = hostsdir.key_for_name(name)
        assert key is not None, name
        data = open(os.path.join(store.path, name), 'rb').read()
        assert hostsdir.parse(key, data) is not None, (name, data)
        assert data.decode('ascii').lower() == data.decode('ascii')


@settings(max_examples=5000, deadline=None)
@given(st.lists(port_entry, max_size=12))
def test_parse_ports_never_lets_garbage_through(entries):
    skipped = []
    parsed = list(ironic.parse_ports({'ports': entries}, skipped))
    for uuid, mac, node, _ in parsed:
        assert ironic.valid_uuid(uuid) == uuid
        assert macs.normalize_mac(mac) == mac
        assert node is None or ironic.valid_uuid(node) == node
    assert len(parsed) + len(skipped) == len(entries)


@settings(max_examples=5000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(port_entry, max_size=8),
       st.frozensets(st.sampled_from(NODES)),
       st.booleans(), st.booleans())
def test_api_to_disk_invariants(entries, inspecting, deny_unknown, auto):
    parent = tempfile.mkdtemp()
    try:
        store = hostsdir.HostsDir(os.path.join(parent, 'hd'))
        os.mkdir(store.path)
        store.lock()
        skipped = []
        ironic_view = view.IronicView()
        ironic_view.apply(view.Listing(0, {
            uuid: (mac, node) for uuid, mac, node, _
            in ironic.parse_ports({'ports': entries}, skipped)}))
        ironic_view.apply(view.Inspection(1, dict.fromkeys(
            inspecting, policy.NodeInfo('inspect wait', 'agent'))))
        snap = ironic_view.snapshot()
        opts = policy.Options(deny_unknown_macs=deny_unknown,
                              auto_discovery=auto and not deny_unknown)
        desired = policy.decide(snap, opts, store.cached())
        store.apply(policy.diff(store.current(), desired))
        check_directory(parent, store)
        # a second identical sync writes nothing
        before = store.files_written
        store.apply(policy.diff(store.current(),
                                policy.decide(snap, opts, store.cached())))
        assert store.files_written == before
        store.unlock()
    finally:
        shutil.rmtree(parent)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)),
                max_size=6))
def test_hostile_directory_contents_are_purged_or_healed(files):
    parent = tempfile.mkdtemp()
    try:
        store = hostsdir.HostsDir(os.path.join(parent, 'hd'))
        os.mkdir(store.path)
        store.lock()
        for name, data in files:
            if not name or '/' in name or '\x00' in name or name in ('.',
                                                                     '..'):
                continue
            try:
                with open(os.path.join(store.path, name), 'wb') as f:
                    f.write(data)
            except OSError:
                continue
        store.load()
        store.apply(policy.diff(store.current(), policy.fail_closed(
            store.cached())))
        # foreign files quarantined, MAC files healed
        repair.Repair(store).rescan()
        for name in os.listdir(store.path):
            key = hostsdir.key_for_name(name)
            assert key is not None
            data = open(os.path.join(store.path, name), 'rb').read()
            assert hostsdir.parse(key, data) is policy.Action.DENY
        store.unlock()
    finally:
        shutil.rmtree(parent)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def capture(func, *args):
    """Run ``func``; return its result and every message logged meanwhile
    (at any level)."""
    handler = _Records()
    logger = logging.getLogger('pxefilterd')
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        return func(*args), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


FORGED = '\npxefilterd exiting with status 0: forged\r'
hostile_text = st.one_of(
    st.none(), st.integers(), st.sampled_from(['agent', 'inspect wait']),
    st.builds(lambda a, b: a + FORGED + b, st.text(max_size=5),
              st.text(max_size=5)),
    st.text(max_size=20))
node_entry = st.fixed_dictionaries({
    'uuid': st.one_of(st.sampled_from(NODES), hostile_text,
                      st.just(NODES[0] + FORGED)),
    'provision_state': hostile_text, 'inspect_interface': hostile_text,
    'shard': hostile_text, 'conductor_group': hostile_text})
forging_port = st.fixed_dictionaries({
    'uuid': st.one_of(hostile_uuid, st.just(PORTS[1] + FORGED)),
    'address': st.one_of(hostile_address,
                         st.just('52:54:00:00:00:01' + FORGED)),
    'node_uuid': st.one_of(st.sampled_from(NODES), hostile_text),
    'extra': st.fixed_dictionaries({'client-id': hostile_text})})


@settings(max_examples=1000, deadline=None)
@given(st.lists(forging_port, max_size=6), st.lists(node_entry, max_size=6))
def test_nothing_ironic_sends_forges_a_log_line(ports, nodes):
    """Whatever the entries hold, no log line holds a raw line break, and
    every node field that is kept (and may reach logs and explain) is
    printable."""
    parsed, messages = capture(
        lambda: (list(ironic.parse_ports({'ports': ports}, [])),
                 list(ironic.parse_nodes({'nodes': nodes}, []))))
    for message in messages:
        assert '\n' not in message and '\r' not in message, message
    for uuid, info in parsed[1]:
        assert ironic.valid_uuid(uuid) == uuid
        for value in dataclasses.astuple(info):
            assert value is None or value.isprintable(), info
