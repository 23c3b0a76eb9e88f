"""The service lifecycle against a fake snapshot source and real commands."""

import errno
import json
import os
import sys
import threading
import time

import pytest

from pxefilterd import commands
from pxefilterd import hostsdir
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import supervisor
from tests import fake_dnsmasq
from tests.fake_ironic import FakeIronic
from tests.waiting import wait_for

RECORDER = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        'record_command.py')
A1, B1, C1 = '52:54:00:00:00:a1', '52:54:00:00:00:b1', '52:54:00:00:00:c1'
X1 = '52:54:00:00:00:99'
DENY_A1 = A1 + ',ignore\n'
WILD_DENY = '*:*:*:*:*:*,ignore\n20-:,ignore\n'
WILD_ALLOW = '*:*:*:*:*:*\n20-:\n'


class Notifier:
    """Records systemd notifications."""

    def __init__(self):
        self.pings = []
        self.ready_at = None

    def ready(self, status):
        self.ready_at = time.monotonic()

    def status(self, status):
        pass

    def watchdog(self):
        self.pings.append(time.monotonic())

    def stopping(self, status):
        pass


class Harness:
    """A service on a fake ironic (over HTTP, through the real client)
    holding node A (port A1) and node B (port B1), both manageable."""

    def __init__(self, tmp_path, settings=None, start_code=0, stop_code=0,
                 reload=False, guard=False, timeout=2.0, retries=0):
        self.dir = tmp_path / 'hostsdir'
        self.dir.mkdir()
        self.log = tmp_path / 'commands.log'
        self.fake = FakeIronic().start()
        self.node_a = self.fake.add_node()
        self.node_b = self.fake.add_node()
        self.port_a1 = self.fake.add_port(self.node_a, A1)
        self.port_b1 = self.fake.add_port(self.node_b, B1)
        self.client = self.fake.client(timeout=timeout, retries=retries)
        self.store = hostsdir.HostsDir(str(self.dir))
        self.notifier = Notifier()

        def cmd(name, code=0):
            return [sys.executable, RECORDER, str(self.log), name,
                    str(self.dir), str(code)]

        self.cmds = commands.Commands(
            start=cmd('start', start_code), stop=cmd('stop', stop_code),
            reload=cmd('reload') if reload else (), timeout=10)
        self.settings = settings or service.Settings(
            sync_period=0.2, poll_interval=0.05, lock_wait=0)
        # idle or not, poll at poll_interval (test_feed covers the idle one)
        self.settings.idle_poll_interval = 0
        self.svc = service.Service(
            self.settings, self.client, self.store, self.cmds,
            guard_factory=None, notifier=self.notifier)
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.code = self.svc.run()

    def start(self):
        self.thread.start()
        return self

    def stop(self, reason='test'):
        self.svc.request_stop(reason)
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        return self.code

    def inspect(self, node, state='inspect wait'):
        self.fake.set_node(node, provision_state=state)

    def requests(self, **match):
        """Port requests so far whose query has all of ``match``."""
        return [q for p, q in self.fake.requests if p == '/v1/ports'
                and all(q.get(k) == v for k, v in match.items())]

    def full_listings(self):
        """Full port listings started so far (first pages)."""
        return [q for q in self.requests() if 'marker' not in q
                and not {'sort_key', 'node_uuid'} & set(q)]

    def records(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().split('\n')
                if line]

    def names(self):
        return [r['name'] for r in self.records()]

    def files(self):
        # the daemon runs meanwhile: a file listed may be gone when read
        found = {}
        for name in os.listdir(self.dir):
            try:
                found[name] = (self.dir / name).read_text()
            except FileNotFoundError:
                pass
        return found

    def cleanup(self):
        """Stop what the test left running (the fixtures' teardown)."""
        if self.thread.is_alive():
            self.stop('fixture cleanup')
        gate, self.fake.listing_gate = self.fake.listing_gate, None
        if gate is not None:
            gate.set()
        self.fake.stop()


def made_by(cls, tmp_path):
    """A fixture's body: yield a factory of ``cls`` harnesses, clean each
    up afterwards."""
    made = []

    def make(**kwargs):
        h = cls(tmp_path, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.cleanup()


@pytest.fixture
def harness(tmp_path):
    yield from made_by(Harness, tmp_path)




def test_start_after_first_sync_and_stop_on_request(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'], what='start command')
    start = h.records()[0]
    # dnsmasq was started on a complete, synced directory
    assert start['files'] == {A1: DENY_A1, B1: B1 + ',ignore\n',
                              'unknown_hosts_filter': WILD_DENY}
    assert h.stop('SIGTERM') == service.EXIT_OK
    assert h.names() == ['start', 'stop']


def test_purge_at_start_removes_stale_files(harness):
    h = harness()
    (h.dir / 'stale-garbage').write_text('x')
    (h.dir / X1).write_text(X1 + '\n')
    h.start()
    wait_for(lambda: h.names() == ['start'])
    assert set(h.records()[0]['files']) == {A1, B1, 'unknown_hosts_filter'}
    h.stop()


def test_dnsmasq_not_started_until_ironic_answers(harness):
    h = harness()
    h.fake.failures = 3
    h.start()
    wait_for(lambda: h.names() == ['start'], timeout=20)
    assert h.fake.failures == 0
    assert h.svc.stats.api_errors >= 1
    assert h.stop() == service.EXIT_OK


def test_stop_before_first_sync_never_starts_dnsmasq(harness):
    h = harness()
    h.fake.broken = {'ports', 'nodes'}
    h.start()
    wait_for(lambda: h.svc.stats.api_errors >= 2)
    # the fail-closed state is on disk meanwhile
    assert h.files() == {'unknown_hosts_filter': WILD_DENY}
    assert h.stop() == service.EXIT_OK
    assert h.names() == []


def test_inspection_is_applied_by_the_poll(harness):
    h = harness(settings=service.Settings(sync_period=3600,
                                          poll_interval=0.05, lock_wait=0))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.inspect(h.node_a)
    # (the wildcard's allow is written after the per-MAC files: wait for it)
    wait_for(lambda: h.files().get('unknown_hosts_filter') == WILD_ALLOW,
             what='allow unknown')
    assert h.files()[A1] == A1 + '\n'
    assert h.files()[B1] == B1 + ',ignore\n'
    h.inspect(h.node_a, 'manageable')
    wait_for(lambda: h.files().get(A1) == DENY_A1, what='deny A1 again')
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    assert len(h.full_listings()) == 1   # the poll did it all
    h.stop()


def test_node_deleted_mid_inspection_does_not_wedge_the_poll(harness):
    h = harness(settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0,
        options=policy.Options(deny_unknown_macs=True)))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.inspect(h.node_a)
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.fake.delete_node(h.node_a)
    wait_for(lambda: h.files().get(A1) == DENY_A1, what='A1 unknown: deny')
    # (denied as soon as the node is not inspected; forgotten with the 404
    # for its ports, which follows in the same poll)
    wait_for(lambda: A1 not in h.svc.view.macs, what='A1 forgotten')
    h.inspect(h.node_b)
    wait_for(lambda: h.files().get(B1) == B1 + '\n', what='B1 allowed')
    assert h.svc.stats.api_errors == 0
    h.stop()


def test_polls_go_on_during_a_slow_listing_and_their_answers_win(harness):
    """A full listing runs in its own thread: an inspection and a port
    created meanwhile are applied at once, and the listing, whose pages
    were read before the port existed, does not undo it when it lands."""
    h = harness(settings=service.Settings(
        sync_period=0.2, poll_interval=0.05, lock_wait=0,
        options=policy.Options(deny_unknown_macs=True)))
    seen_at_sync = []
    h.svc.sync_observers.append(
        lambda duration: seen_at_sync.append(h.files().get(C1)))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    gate = h.fake.listing_gate = threading.Event()
    listings = len(h.full_listings())
    wait_for(lambda: len(h.full_listings()) > listings,
             what='a listing held after reading its page')
    node_c = h.fake.add_node('inspect wait')
    h.fake.add_port(node_c, C1)
    wait_for(lambda: h.files().get(C1) == C1 + '\n',
             what='C1 allowed while the listing is still out')
    del seen_at_sync[:]
    h.fake.listing_gate = None
    gate.set()
    wait_for(lambda: seen_at_sync, what='the stale listing adopted')
    assert seen_at_sync[0] == C1 + '\n'
    assert h.files().get(C1) == C1 + '\n'
    assert h.svc.stats.api_errors == 0
    h.stop()


def test_port_gone_from_ironic_gets_unknown_state(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    h.fake.delete_port(h.port_b1)
    h.inspect(h.node_a)
    wait_for(lambda: h.files().get(B1) == B1 + '\n', what='B1 unknown=allow')
    h.inspect(h.node_a, 'manageable')
    wait_for(lambda: h.files().get(B1) == B1 + ',ignore\n')
    h.stop()


def test_api_errors_in_the_loop_keep_the_state(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    h.inspect(h.node_a)
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.fake.failures = 6
    wait_for(lambda: h.fake.failures == 0, timeout=30)
    assert h.svc.stats.api_errors >= 1
    assert h.files().get(A1) == A1 + '\n'
    assert h.thread.is_alive()
    h.stop()


@pytest.mark.parametrize('sync_period', [0.1, 3600])
def test_max_stale_fails_closed_and_recovers(harness, sync_period):
    # with sync_period=3600 only the inspection poll talks to ironic
    h = harness(settings=service.Settings(
        sync_period=sync_period, poll_interval=0.05, max_stale_seconds=0.3,
        lock_wait=0))
    h.inspect(h.node_a)
    h.start()
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.fake.broken = {'ports', 'nodes'}
    wait_for(lambda: h.svc.stats.failed_closed, what='fail closed')
    wait_for(lambda: h.files()[A1] == DENY_A1, what='A1 denied')
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    h.fake.broken = set()
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='recovery',
             timeout=30)
    assert not h.svc.stats.failed_closed
    h.stop()


@pytest.mark.parametrize('broken', ['nodes', 'ports'])
def test_a_partial_answer_is_not_contact(harness, broken):
    """The full listing answers but the node requests fail (or the nodes
    answer but the per-node port fetches fail): ironic's view is not known,
    so the daemon fails closed, and stays closed."""
    h = harness(settings=service.Settings(
        sync_period=0.1 if broken == 'nodes' else 3600, poll_interval=0.05,
        max_stale_seconds=0.5, lock_wait=0))
    h.inspect(h.node_a)
    h.start()
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    if broken == 'ports':
        # a node leaving inspection needs a fetch of its ports
        h.inspect(h.node_a, 'manageable')
    h.fake.broken = {broken}
    wait_for(lambda: h.svc.stats.failed_closed, what='fail closed')
    wait_for(lambda: h.files()[A1] == DENY_A1, what='A1 denied')
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    h.fake.broken = set()
    wait_for(lambda: not h.svc.stats.failed_closed, what='recovery',
             timeout=30)
    h.stop()


def test_hanging_ironic_never_holds_the_loop(harness):
    """ironic takes 3 s per answer (the client waits 2 s): pings go on at
    the loop's pace, and a stop is immediate."""
    h = harness(timeout=2.0, retries=1, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.fake.mode, h.fake.delay = 'slow', 3.0
    hung = time.monotonic()
    time.sleep(6)
    pings = [t for t in h.notifier.pings if t > hung]
    gaps = [b - a for a, b in zip([hung] + pings, pings)]
    assert pings and max(gaps) < 5.5, gaps
    started = time.monotonic()
    assert h.stop() == service.EXIT_OK
    assert time.monotonic() - started < 1.0
    assert h.svc.threads_alive()   # left behind, waiting on ironic


def test_noop_sync_writes_nothing(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    written = h.store.files_written
    syncs = h.svc.stats.syncs
    wait_for(lambda: h.svc.stats.syncs >= syncs + 3)
    assert h.store.files_written == written
    h.stop()


def test_failing_start_command_is_retried_then_fatal(harness, monkeypatch):
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 3)
    h = harness(start_code=3).start()
    h.thread.join(timeout=30)
    assert h.code == service.EXIT_FAILURE
    assert h.names() == ['start', 'start', 'start', 'stop']


def test_vanished_hostsdir_is_fatal_and_stops_dnsmasq(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    for name in os.listdir(h.dir):
        os.unlink(h.dir / name)
    os.rmdir(h.dir)
    h.inspect(h.node_a)
    h.thread.join(timeout=20)
    assert h.code == service.EXIT_FAILURE
    assert h.names() == ['start', 'stop']


def test_second_instance_on_same_hostsdir_refused(harness, tmp_path):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    other = service.Service(service.Settings(lock_wait=0), h.client,
                            hostsdir.HostsDir(str(h.dir)), h.cmds)
    assert other.run() == service.EXIT_FAILURE
    assert h.names() == ['start']   # the second one touched nothing
    h.stop()


def test_reload_after_purge_when_dnsmasq_is_external(harness):
    h = harness(reload=True)
    h.cmds.start = commands.Command('start', [])
    h.fake.failures = 1
    h.start()
    wait_for(lambda: h.names() == ['reload'])
    # reloaded on the fail-closed state, before the first (failing) sync
    assert h.records()[0]['files'] == {'unknown_hosts_filter': WILD_DENY}
    wait_for(lambda: set(h.files()) == {A1, B1, 'unknown_hosts_filter'})
    h.stop()
    assert h.names() == ['reload', 'stop']


def test_no_reload_after_purge_of_an_external_dnsmasq_not_running(
        harness, tmp_path):
    """A sidecar dnsmasq not started yet holds no record: the reload
    (which would fail, and stop pxefilterd) is not run, then or later: it
    reads the purged, fail-closed hostsdir when it starts."""
    h = harness(reload=True)
    pid_file = tmp_path / 'dnsmasq.pid'
    h.cmds.start = commands.Command('start', [])
    h.svc.pid_file = str(pid_file)
    h.start()
    wait_for(lambda: h.svc.ready, what='ready')
    assert h.names() == []
    assert h.svc.supervisor.status == 'gone'
    fake_dnsmasq.start(str(pid_file))
    try:
        wait_for(lambda: h.svc.supervisor.status == 'running',
                 what='dnsmasq seen')
        assert h.stop() == service.EXIT_OK
        assert 'reload' not in h.names()
    finally:
        fake_dnsmasq.stop(str(pid_file))


def test_sighup_applies_new_options_without_restart(harness):
    h = harness(settings=service.Settings(sync_period=3600,
                                          poll_interval=0.05, lock_wait=0))
    new = service.Settings(sync_period=3600, poll_interval=0.05, lock_wait=0,
                           options=policy.Options(auto_discovery=True))
    h.svc._reload_settings = lambda: new
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.svc.request_reload()
    wait_for(lambda: h.files()['unknown_hosts_filter'] == WILD_ALLOW)
    assert h.svc.settings is new
    h.stop()
    assert h.names() == ['start', 'stop']


def test_sighup_with_bad_config_keeps_running(harness):
    h = harness()

    def broken():
        raise ValueError('[pxe_filter] auto_discovery and deny_unknown_macs')

    h.svc._reload_settings = broken
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.svc.request_reload()
    syncs = h.svc.stats.syncs
    wait_for(lambda: h.svc.stats.syncs > syncs)
    assert h.stop() == service.EXIT_OK


def many_ports(h, n):
    """n more nodes with a port each; return their UUIDs."""
    nodes = []
    for i in range(n):
        node = h.fake.add_node()
        h.fake.add_port(node, '52:54:00:00:10:%02x' % i)
        nodes.append(node)
    return nodes


def test_big_change_set_is_followed_by_one_reload(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5))
    nodes = many_ports(h, 20)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    for node in nodes[:10]:
        h.inspect(node)
    wait_for(lambda: 'reload' in h.names(), what='reload')
    wait_for(lambda: sum(1 for v in h.files().values()
                         if not v.endswith(',ignore\n')) == 11)
    h.stop()
    # one reload per change set larger than max_burst; the polls may see
    # the ten inspections in one answer or in a few
    assert h.names()[0] == 'start' and h.names()[-1] == 'stop'
    assert set(h.names()[1:-1]) == {'reload'}


def test_small_change_set_needs_no_reload(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5))
    nodes = many_ports(h, 20)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.inspect(nodes[1])
    wait_for(lambda: h.files().get('52:54:00:00:10:01') ==
             '52:54:00:00:10:01\n')
    h.stop()
    assert h.names() == ['start', 'stop']


def test_big_change_set_without_reload_is_paced(harness):
    h = harness(settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5,
        burst_rate=100))
    nodes = many_ports(h, 30)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    for node in nodes:
        h.inspect(node)
    wait_for(lambda: h.svc.view.nodes.keys() >= set(nodes))
    started = time.monotonic()
    wait_for(lambda: h.files().get('52:54:00:00:10:1d') ==
             '52:54:00:00:10:1d\n', what='all written')
    # 31 files (30 + wildcard): at most 5 at once, the rest at 100/s
    assert time.monotonic() - started > 0.15
    assert h.names() == ['start']
    h.stop()


def test_compaction_removes_gone_macs_and_reloads(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=0.1, poll_interval=0.05, lock_wait=0,
        compaction_interval=0.3))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.fake.delete_port(h.port_b1)
    wait_for(lambda: B1 not in h.files(), what='compaction')
    wait_for(lambda: h.names() == ['start', 'reload'])
    assert B1 not in h.files()
    assert B1 not in h.store.index
    h.stop()


def test_base_file_first_sync_and_compaction(harness, tmp_path):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0,
        compaction_interval=0.3))
    h.store.base_path = str(tmp_path / 'hosts')
    (tmp_path / 'hosts').write_text(A1 + '\n')      # stale allow from before
    h.start()
    wait_for(lambda: h.names() == ['start'])
    # dnsmasq started on one base file and the wildcard, no per-MAC files
    assert h.records()[0]['files'] == {'unknown_hosts_filter': WILD_DENY}
    assert (tmp_path / 'hosts').read_text() == DENY_A1 + B1 + ',ignore\n'
    h.inspect(h.node_a)
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='per-MAC allow')
    # compaction folds the per-MAC file into the base file, then reloads
    wait_for(lambda: 'reload' in h.names(), what='compaction')
    assert (tmp_path / 'hosts').read_text() == A1 + '\n' + B1 + ',ignore\n'
    assert h.records()[-1]['files'] == {'unknown_hosts_filter': WILD_ALLOW}
    h.stop()


def test_hanging_start_command_times_out_and_stops(harness, tmp_path,
                                                   monkeypatch):
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 2)
    h = harness()
    h.cmds.start = commands.Command(
        'start', [sys.executable, '-c', 'import time; time.sleep(60)'],
        timeout=0.5)
    started = time.monotonic()
    h.start()
    h.thread.join(timeout=20)
    assert h.code == service.EXIT_FAILURE
    assert time.monotonic() - started < 15
    assert h.names() == ['stop']


def test_hanging_stop_command_does_not_block_exit(harness):
    h = harness()
    h.cmds.stop = commands.Command(
        'stop', [sys.executable, '-c', 'import time; time.sleep(60)'],
        timeout=0.5)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    started = time.monotonic()
    assert h.stop() == service.EXIT_OK
    assert time.monotonic() - started < 15


def test_each_decision_change_is_logged_once_with_its_reason(harness,
                                                             caplog):
    h = harness(settings=service.Settings(sync_period=3600,
                                          poll_interval=0.05, lock_wait=0))
    caplog.set_level('INFO', logger='pxefilterd.decision')
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.inspect(h.node_a)
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.fake.delete_node(h.node_a)
    wait_for(lambda: h.files().get(A1) == DENY_A1)
    h.stop()
    lines = [r.getMessage() for r in caplog.records
             if r.name == 'pxefilterd.decision']
    assert lines[:3] == [
        'Unknown MACs: deny -> allow: not a port in ironic; unknown MACs '
        'may boot while a node is inspected (1 now), so that a node whose '
        'ports are not enrolled yet can boot; set deny_unknown_macs to '
        'deny them [rule=unknown-during-inspection]',
        'MAC %s: deny -> allow: port of node %s in inspect wait '
        '(inspect_interface agent): allowed [rule=inspected]'
        % (A1, h.node_a),
        'Unknown MACs: allow -> deny: not a port in ironic, and no node is '
        'inspected: denied [rule=unknown-no-inspection]']
    # The poll's inspection answer (the node is not inspected any more) is
    # applied ahead of the 404 for its ports (it was deleted), or with it.
    assert lines[3:] in (
        ['MAC %s: allow -> deny: its node %s was deleted from ironic; not a '
         'port in ironic, and no node is inspected: denied '
         '[rule=unknown-no-inspection]' % (A1, h.node_a)],
        ['MAC %s: allow -> deny: port of node %s, which is not in an '
         'inspection state: denied [rule=not-inspected]' % (A1, h.node_a)])
    assert h.svc.decisions.history[A1][1:3] == ('allow', 'deny')


FAKE_DNSMASQ = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                            'fake_dnsmasq.py')


@pytest.fixture
def supervised(harness, tmp_path):
    """A harness whose start/stop commands run a fake dnsmasq (a process
    named dnsmasq) with a pid file the service watches."""
    pid_file = str(tmp_path / 'run' / 'dnsmasq.pid')
    os.makedirs(os.path.dirname(pid_file))
    made = []

    def make(**kwargs):
        h = harness(**kwargs)
        for name in ('start', 'stop'):
            setattr(h.cmds, name, commands.Command(
                name, [sys.executable, FAKE_DNSMASQ, name, pid_file],
                timeout=10))
        h.svc.cmds = h.cmds
        h.svc.pid_file = pid_file
        h.pid_file = pid_file
        made.append(h)
        return h

    yield make
    if made:
        try:
            os.kill(int(open(pid_file).read()), 9)
        except (OSError, ValueError):
            pass


def dnsmasq_pid(h):
    try:
        return int(open(h.pid_file).read())
    except (OSError, ValueError):
        return None


def test_dnsmasq_killed_is_noticed_and_started_again(supervised):
    h = supervised().start()
    wait_for(lambda: h.svc.stats.dnsmasq_state == 'running')
    first = dnsmasq_pid(h)
    os.kill(first, 9)
    wait_for(lambda: dnsmasq_pid(h) not in (None, first)
             and h.svc.stats.dnsmasq_state == 'running', timeout=10,
             what='a new dnsmasq')
    assert h.svc.stats.dnsmasq_starts == 2
    assert h.stop() == service.EXIT_OK


def test_a_dnsmasq_that_never_shows_up_is_fatal(supervised, monkeypatch):
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 2)
    monkeypatch.setattr(supervisor, 'START_GRACE', 0.3)
    h = supervised()
    h.svc.pid_file = h.pid_file + '.wrong'
    h.start()
    h.thread.join(timeout=30)
    assert h.code == service.EXIT_FAILURE
    assert h.svc.stats.dnsmasq_starts == 2
    # Each start that never showed up was stopped again: nothing it left
    # runs on (it would hold dnsmasq's port against the next one).
    exe = os.path.join(os.path.dirname(h.pid_file), 'dnsmasq')
    wait_for(lambda: not running_as(exe), timeout=10,
             what='every fake dnsmasq stopped')


def running_as(exe):
    """PIDs of live processes whose argv[0] is ``exe``."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv0 = f.read().split(b'\0')[0].decode()
        except OSError:
            continue        # not a process, or gone
        if argv0 == exe and fake_dnsmasq.alive(int(entry)):
            found.append(int(entry))
    return found


def test_the_guard_stopping_dnsmasq_gets_it_started_again(supervised):
    from pxefilterd import guard
    h = supervised()
    h.svc.helpers.guard_factory = guard.Guard
    h.start()
    wait_for(lambda: h.svc.stats.dnsmasq_state == 'running')
    first = dnsmasq_pid(h)
    h.svc.helpers.guard.proc.terminate()   # runs the stop command, exits 3
    wait_for(lambda: dnsmasq_pid(h) not in (None, first)
             and h.svc.stats.dnsmasq_state == 'running', timeout=15,
             what='dnsmasq started again')
    assert h.svc.helpers.guard.alive()
    assert h.stop() == service.EXIT_OK


def test_the_guard_stopping_dnsmasq_without_a_pid_file_restarts_it(
        harness):
    """Nothing can be observed: the guard's exit status is the only sign,
    and the start command runs again (once)."""
    from pxefilterd import guard
    h = harness()
    h.svc.helpers.guard_factory = guard.Guard
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.svc.helpers.guard.proc.terminate()   # runs the stop command, exits 3
    wait_for(lambda: h.names() == ['start', 'stop', 'start'], timeout=15,
             what='stopped by the guard, started again')
    time.sleep(1.5)
    assert h.names() == ['start', 'stop', 'start']
    assert h.stop() == service.EXIT_OK


def test_status_without_a_pid_file_is_not_assumed_silently(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    wait_for(lambda: h.svc.stats.dnsmasq_state != 'starting')
    assert h.svc.stats.dnsmasq_state == 'not observed'
    assert 'dnsmasq_pid_file' in h.svc.stats.dnsmasq_detail
    h.stop()


def test_a_failing_reload_in_a_burst_is_not_fatal(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5,
        burst_rate=1000))
    h.cmds.reload = commands.Command('reload', ['false'])
    h.svc.cmds = h.cmds
    h.svc.writer.reload = h.cmds.reload
    nodes = many_ports(h, 20)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    for node in nodes:
        h.inspect(node)
    wait_for(lambda: h.svc.writer.reload_failures >= 1, what='a failure')
    wait_for(lambda: sum(1 for v in h.files().values()
                         if not v.endswith(',ignore\n')) == 21)
    wait_for(lambda: h.svc.writer.pending == 0, what='re-asserted')
    assert h.thread.is_alive()
    assert h.stop() == service.EXIT_OK


SIGNAL_PROBE = '''
import os, signal, sys
from pxefilterd import commands, service
svc = service.Service(service.Settings(), None, None, commands.Commands())
svc.prepare_for_signals()
print('ready', flush=True)
relay = sys.argv[1] == 'relay'
signal.signal(signal.SIGTERM, lambda *a: svc.request_stop(
    'SIGTERM', from_signal=relay))
# The loop thread inside Event.clear()/wait() holds the Event's lock when
# the signal arrives: the handler runs right there, in the same thread.
with svc.wakeup._event._cond:
    os.kill(os.getpid(), signal.SIGTERM)
print('woken' if svc.wakeup.wait(5) else 'not woken', flush=True)
'''


@pytest.mark.parametrize('mode,expected', [('relay', 'woken'),
                                           ('direct', None)])
def test_a_signal_never_deadlocks_on_the_wake_up_lock(mode, expected):
    import subprocess
    # The 4 s that tell a hang from a wake-up start once the probe has
    # imported pxefilterd (seconds of CPU on a loaded machine), not before.
    proc = subprocess.Popen([sys.executable, '-c', SIGNAL_PROBE, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        try:
            proc.wait(timeout=4)
        except subprocess.TimeoutExpired:
            assert expected is None       # Event.set() from the handler: hung
            return
        assert proc.stdout.read().strip() == expected, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_dnsmasq_that_keeps_dying_soon_after_its_start_is_fatal(
        supervised, monkeypatch):
    """Each death within START_GRACE of its start is a failed start: with
    backoff, and pxefilterd gives up (exit 1, dnsmasq stopped) after
    START_ATTEMPTS of them, instead of restarting it for ever."""
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 3)
    monkeypatch.setattr(supervisor, '_START_BACKOFF_MAX', 0.2)
    h = supervised()
    h.start()
    deaths = 0
    deadline = time.monotonic() + 30
    while h.thread.is_alive() and time.monotonic() < deadline:
        pid = dnsmasq_pid(h)
        if pid and h.svc.stats.dnsmasq_state == 'running':
            try:
                os.kill(pid, 9)
                deaths += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    h.thread.join(timeout=10)
    assert h.code == service.EXIT_FAILURE
    assert deaths >= 3
    pid = dnsmasq_pid(h)
    assert pid is None or not os.path.exists('/proc/%d' % pid)


def test_a_start_in_flight_ends_before_the_stop_at_exit(supervised):
    """SIGTERM while a (slow) start command runs: the stop runs after it,
    so no dnsmasq is left behind."""
    h = supervised()
    h.start()
    wait_for(lambda: h.svc.stats.dnsmasq_state == 'running')
    h.cmds.start.argv[:0] = [sys.executable, '-c',
                             'import time, os, sys; time.sleep(1); '
                             'os.execv(sys.argv[1], sys.argv[1:])']
    os.kill(dnsmasq_pid(h), 9)
    wait_for(lambda: h.svc.supervisor.state is supervisor.State.STARTING,
             what='a start in flight')
    assert h.stop() == service.EXIT_OK
    time.sleep(1.5)        # (longer than that start takes)
    pid = dnsmasq_pid(h)
    assert pid is None or not os.path.exists('/proc/%d' % pid)


# -- security review: foreign records, out of descriptors ------------------

@pytest.mark.parametrize('name,content', [
    ('evil', B1.replace(':00:', ':0:') + '\n'),   # 52:54:0:0:00:b1
    ('evil', '525400' + '0000b1\n'),
    (A1, '52:54:0:0:0:b1\n')])
def test_a_foreign_record_is_forgotten_by_a_reload(harness, name, content):
    """Whatever form a foreign record takes (dnsmasq reads more than the
    scan recognises), the repair is followed by a reload of dnsmasq, on
    the repaired directory."""
    from pxefilterd import watcher
    h = harness(reload=True)
    h.svc.helpers.watcher_factory = watcher.HostsDirWatcher
    h.start()
    wait_for(lambda: h.names() == ['start'])
    wait_for(lambda: h.svc.helpers.watcher is not None, what='the watcher')
    tmp = h.dir.parent / 'foreign.tmp'
    tmp.write_text(content)
    os.rename(tmp, h.dir / name)
    wait_for(lambda: 'reload' in h.names(), timeout=5, what='a reload')
    reload = [r for r in h.records() if r['name'] == 'reload'][0]
    assert 'evil' not in reload['files']
    assert reload['files'][A1] == DENY_A1
    wait_for(lambda: not h.svc.writer.foreign_live(), what='forgotten')
    h.stop()


def test_out_of_descriptors_while_writing_is_not_fatal(harness, monkeypatch):
    """EMFILE used to be a fatal hostsdir error: a flood of connections to
    a side service (metrics) made the daemon exit at the next change."""
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    real_open = os.open
    failures = []

    def open_(path, *args, **kwargs):
        if (os.fspath(path).startswith(h.store.staging)
                and len(failures) < 5):
            failures.append(path)
            raise OSError(errno.EMFILE, 'Too many open files')
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', open_)
    h.inspect(h.node_a)
    wait_for(lambda: len(failures) >= 5, what='EMFILE')
    wait_for(lambda: h.files().get(A1) == A1 + '\n', timeout=15,
             what='the change written once descriptors are back')
    assert h.thread.is_alive()
    assert h.stop() == service.EXIT_OK
