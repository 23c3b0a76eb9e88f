"""The service lifecycle against a fake snapshot source and real commands."""

import json
import os
import sys
import threading
import time

import pytest

from pxefilterd import commands
from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd import policy
from pxefilterd import service
from tests.waiting import wait_for

RECORDER = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        'record_command.py')
A1, B1, X1 = '52:54:00:00:00:a1', '52:54:00:00:00:b1', '52:54:00:00:00:99'
DENY_A1 = A1 + ',ignore\n'
WILD_DENY, WILD_ALLOW = '*:*:*:*:*:*,ignore\n', '*:*:*:*:*:*\n'


class FakeSource:
    def __init__(self):
        self.port_map = {A1: 'node-a', B1: 'node-b'}
        self.inspecting_nodes = set()
        self.failures = 0
        self.calls = []
        self.lock = threading.Lock()
        self.listing_gate = None   # an Event a full listing waits for
        self.broken = set()        # calls that always fail

    def _maybe_fail(self, what):
        with self.lock:
            self.calls.append(what)
            if what in self.broken:
                raise ironic.ApiError('%s is broken (fake)' % what)
            if self.failures:
                self.failures -= 1
                raise ironic.ApiError('ironic is down (fake)')

    def snapshot(self):
        self._maybe_fail('snapshot')
        return policy.Snapshot(dict(self.port_map),
                               frozenset(self.inspecting_nodes))

    def ports(self):
        self._maybe_fail('ports')
        # The pages are read when the listing starts, like a slow listing
        # whose answers age while the last pages are still coming.
        pages = dict(self.port_map)
        gate = self.listing_gate
        if gate is not None:
            assert gate.wait(timeout=30), 'listing gate never opened'
        return pages

    def inspecting(self):
        self._maybe_fail('inspecting')
        return frozenset(self.inspecting_nodes)

    def ports_of(self, nodes):
        self._maybe_fail('ports_of')
        return {m: n for m, n in self.port_map.items() if n in nodes}


class Harness:
    def __init__(self, tmp_path, settings=None, start_code=0, stop_code=0,
                 reload=False, guard=False):
        self.dir = tmp_path / 'hostsdir'
        self.dir.mkdir()
        self.log = tmp_path / 'commands.log'
        self.source = FakeSource()
        self.store = hostsdir.HostsDir(str(self.dir))

        def cmd(name, code=0):
            return [sys.executable, RECORDER, str(self.log), name,
                    str(self.dir), str(code)]

        self.cmds = commands.Commands(
            start=cmd('start', start_code), stop=cmd('stop', stop_code),
            reload=cmd('reload') if reload else (), timeout=10)
        self.settings = settings or service.Settings(
            sync_period=0.2, poll_interval=0.05, lock_wait=0)
        self.svc = service.Service(
            self.settings, self.source, self.store, self.cmds,
            guard_factory=None)
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

    def records(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().split('\n')
                if line]

    def names(self):
        return [r['name'] for r in self.records()]

    def files(self):
        return {n: (self.dir / n).read_text() for n in os.listdir(self.dir)}


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(**kwargs):
        h = Harness(tmp_path, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.thread.is_alive():
            h.stop('fixture cleanup')


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
    h.source.failures = 2
    h.start()
    wait_for(lambda: h.source.calls.count('snapshot') >= 3, timeout=15)
    wait_for(lambda: h.names() == ['start'])
    assert h.stop() == service.EXIT_OK


def test_stop_before_first_sync_never_starts_dnsmasq(harness):
    h = harness()
    h.source.failures = 10 ** 6
    h.start()
    wait_for(lambda: h.source.calls)
    # the fail-closed state is on disk meanwhile
    wait_for(lambda: h.files() == {'unknown_hosts_filter': WILD_DENY})
    assert h.stop() == service.EXIT_OK
    assert h.names() == []


def test_inspection_is_applied_by_the_poll(harness):
    h = harness(settings=service.Settings(sync_period=3600,
                                          poll_interval=0.05, lock_wait=0))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.source.inspecting_nodes.add('node-a')
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='allow A1')
    assert h.files()['unknown_hosts_filter'] == WILD_ALLOW
    assert h.files()[B1] == B1 + ',ignore\n'
    assert h.source.calls.count('snapshot') == 1   # no full sync needed
    h.source.inspecting_nodes.clear()
    wait_for(lambda: h.files().get(A1) == DENY_A1, what='deny A1 again')
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    h.stop()


def test_polls_go_on_during_a_slow_listing_and_their_answers_win(harness):
    """A full listing runs in the background: an inspection that starts
    meanwhile is applied at once, and the listing, read before the node's
    port existed, does not undo it when it lands."""
    c1 = '52:54:00:00:00:c1'
    h = harness(settings=service.Settings(
        sync_period=0.2, poll_interval=0.05, lock_wait=0,
        options=policy.Options(deny_unknown_macs=True)))
    seen_at_sync = []
    h.svc.sync_observers.append(
        lambda duration: seen_at_sync.append(h.files().get(c1)))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    gate = h.source.listing_gate = threading.Event()
    listings = h.source.calls.count('ports')
    wait_for(lambda: h.source.calls.count('ports') > listings,
             what='a listing waiting at the gate')
    h.source.port_map[c1] = 'node-c'   # enrolled, then inspected
    h.source.inspecting_nodes.add('node-c')
    wait_for(lambda: h.files().get(c1) == c1 + '\n',
             what='C1 allowed while the listing is still out')
    assert not gate.is_set()
    del seen_at_sync[:]
    h.source.listing_gate = None
    gate.set()
    wait_for(lambda: seen_at_sync, what='the stale listing applied')
    # The stale pages had no C1; the poll's answer for node-c was kept.
    assert seen_at_sync[0] == c1 + '\n'
    assert h.svc.stats.api_errors == 0
    h.stop()


def test_port_gone_from_ironic_gets_unknown_state(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    del h.source.port_map[B1]
    h.source.inspecting_nodes.add('node-a')
    wait_for(lambda: h.files().get(B1) == B1 + '\n', what='B1 unknown=allow')
    h.source.inspecting_nodes.clear()
    wait_for(lambda: h.files().get(B1) == B1 + ',ignore\n')
    h.stop()


def test_api_errors_in_the_loop_keep_the_state(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    h.source.inspecting_nodes.add('node-a')
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.source.failures = 20
    wait_for(lambda: h.source.failures == 0, timeout=20)
    assert h.svc.stats.api_errors >= 20
    assert h.files().get(A1) == A1 + '\n'
    assert h.thread.is_alive()
    h.stop()


@pytest.mark.parametrize('sync_period', [0.1, 3600])
def test_max_stale_fails_closed_and_recovers(harness, sync_period):
    # with sync_period=3600 only the inspection poll talks to ironic
    h = harness(settings=service.Settings(
        sync_period=sync_period, poll_interval=0.05, max_stale_seconds=0.3,
        lock_wait=0))
    h.source.inspecting_nodes.add('node-a')
    h.start()
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.source.failures = 10 ** 6
    wait_for(lambda: h.svc.stats.failed_closed, what='fail closed')
    wait_for(lambda: h.files()[A1] == DENY_A1, what='A1 denied')
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    h.source.failures = 0
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='recovery')
    assert not h.svc.stats.failed_closed
    h.stop()


def test_port_listing_alone_does_not_count_as_contact(harness):
    """The full listing answers but the node requests fail: what is under
    inspection is unknown, so the daemon must still fail closed, and stay
    closed while the listings go on succeeding."""
    h = harness(settings=service.Settings(
        sync_period=0.1, poll_interval=0.05, max_stale_seconds=0.3,
        lock_wait=0))
    h.source.inspecting_nodes.add('node-a')
    h.start()
    wait_for(lambda: h.files().get(A1) == A1 + '\n')
    h.source.broken = {'inspecting'}
    wait_for(lambda: h.svc.stats.failed_closed, what='fail closed')
    wait_for(lambda: h.files()[A1] == DENY_A1, what='A1 denied')
    listings = h.source.calls.count('ports')
    wait_for(lambda: h.source.calls.count('ports') >= listings + 5,
             what='five more listings')
    assert h.svc.stats.failed_closed
    assert h.files()[A1] == DENY_A1
    assert h.files()['unknown_hosts_filter'] == WILD_DENY
    h.source.broken = set()
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='recovery')
    h.stop()


def test_loop_sleeps_while_a_listing_outlasts_sync_period(harness):
    h = harness(settings=service.Settings(sync_period=0.05,
                                          poll_interval=0.2, lock_wait=0))
    iterations = []
    check = h.svc._check_helpers
    h.svc._check_helpers = lambda: (iterations.append(1), check())
    h.start()
    wait_for(lambda: h.names() == ['start'])
    gate = h.source.listing_gate = threading.Event()
    listings = h.source.calls.count('ports')
    wait_for(lambda: h.source.calls.count('ports') > listings)
    time.sleep(0.2)   # well past the listing's sync_period
    del iterations[:]
    time.sleep(1.0)
    # woken by the polls (every 0.2 s) and nothing else; a loop that kept
    # waking for the overdue listing would have run thousands of times
    assert len(iterations) < 30
    h.source.listing_gate = None
    gate.set()
    syncs = h.svc.stats.syncs
    wait_for(lambda: h.svc.stats.syncs > syncs)
    h.stop()


def test_noop_sync_writes_nothing(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    written = h.store.files_written
    syncs = h.svc.stats.syncs
    wait_for(lambda: h.svc.stats.syncs >= syncs + 3)
    assert h.store.files_written == written
    h.stop()


def test_failing_start_command_stops_and_exits_nonzero(harness):
    h = harness(start_code=3).start()
    h.thread.join(timeout=20)
    assert h.code == service.EXIT_FAILURE
    assert h.names() == ['start', 'stop']


def test_vanished_hostsdir_is_fatal_and_stops_dnsmasq(harness):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    for name in os.listdir(h.dir):
        os.unlink(h.dir / name)
    os.rmdir(h.dir)
    h.source.inspecting_nodes.add('node-a')
    h.thread.join(timeout=20)
    assert h.code == service.EXIT_FAILURE
    assert h.names() == ['start', 'stop']


def test_second_instance_on_same_hostsdir_refused(harness, tmp_path):
    h = harness().start()
    wait_for(lambda: h.names() == ['start'])
    other = service.Service(service.Settings(lock_wait=0), FakeSource(),
                            hostsdir.HostsDir(str(h.dir)), h.cmds)
    assert other.run() == service.EXIT_FAILURE
    assert h.names() == ['start']   # the second one touched nothing
    h.stop()


def test_reload_after_purge_when_dnsmasq_is_external(harness):
    h = harness(reload=True)
    h.cmds.start = commands.Command('start', [])
    h.source.failures = 1
    h.start()
    wait_for(lambda: h.names() == ['reload'])
    # reloaded on the fail-closed state, before the first (failing) sync
    assert h.records()[0]['files'] == {'unknown_hosts_filter': WILD_DENY}
    wait_for(lambda: set(h.files()) == {A1, B1, 'unknown_hosts_filter'})
    h.stop()
    assert h.names() == ['reload', 'stop']


def test_sighup_applies_new_options_without_restart(harness):
    h = harness(settings=service.Settings(sync_period=3600,
                                          poll_interval=0.05, lock_wait=0))
    new = service.Settings(sync_period=3600, poll_interval=0.05, lock_wait=0,
                           options=policy.Options(auto_discovery=True))
    h.svc._reload_settings = lambda: new
    h.start()
    wait_for(lambda: h.names() == ['start'])
    # Applied to what the daemon knows, not after the (slow) full listing.
    gate = h.source.listing_gate = threading.Event()
    h.svc.request_reload()
    wait_for(lambda: h.files()['unknown_hosts_filter'] == WILD_ALLOW)
    wait_for(lambda: h.source.calls.count('ports') == 1,
             what='the full listing the reload started')
    gate.set()
    syncs = h.svc.stats.syncs
    wait_for(lambda: h.svc.stats.syncs > syncs)
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
    h.source.port_map = {'52:54:00:00:10:%02x' % i: 'node-%d' % i
                      for i in range(n)}


def test_big_change_set_is_followed_by_one_reload(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5))
    many_ports(h, 20)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.source.inspecting_nodes.update('node-%d' % i for i in range(10))
    wait_for(lambda: 'reload' in h.names(), what='reload')
    # the reload came after every file was written
    files = h.records()[-1]['files']
    assert sum(1 for v in files.values() if not v.endswith(',ignore\n')) \
        == 11   # ten nodes + the wildcard
    h.stop()
    assert h.names() == ['start', 'reload', 'stop']


def test_small_change_set_needs_no_reload(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5))
    many_ports(h, 20)
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.source.inspecting_nodes.add('node-1')
    wait_for(lambda: h.files().get('52:54:00:00:10:01') ==
             '52:54:00:00:10:01\n')
    h.stop()
    assert h.names() == ['start', 'stop']


def test_big_change_set_without_reload_is_paced(harness):
    h = harness(settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0, max_burst=5,
        burst_rate=100))
    many_ports(h, 30)
    delays = []
    real_wait = h.svc._stopping.wait

    def recording_wait(timeout=None):
        delays.append(timeout)
        return real_wait(timeout)

    h.svc._stopping.wait = recording_wait
    h.start()
    wait_for(lambda: h.names() == ['start'])
    h.source.inspecting_nodes.update('node-%d' % i for i in range(30))
    wait_for(lambda: h.files().get('52:54:00:00:10:1d') ==
             '52:54:00:00:10:1d\n', what='all written')
    # 31 files (30 + wildcard): 5 at once, 26 paced at 100/s
    assert 0.2 < sum(delays) <= 0.27, delays
    h.stop()


def test_compaction_removes_gone_macs_and_reloads(harness):
    h = harness(reload=True, settings=service.Settings(
        sync_period=0.1, poll_interval=0.05, lock_wait=0,
        compaction_interval=0.3))
    h.start()
    wait_for(lambda: h.names() == ['start'])
    del h.source.port_map[B1]
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
    h.source.inspecting_nodes.add('node-a')
    wait_for(lambda: h.files().get(A1) == A1 + '\n', what='per-MAC allow')
    # compaction folds the per-MAC file into the base file, then reloads
    wait_for(lambda: 'reload' in h.names(), what='compaction')
    assert (tmp_path / 'hosts').read_text() == A1 + '\n' + B1 + ',ignore\n'
    assert h.records()[-1]['files'] == {'unknown_hosts_filter': WILD_ALLOW}
    h.stop()


def test_hanging_start_command_times_out_and_stops(harness, tmp_path):
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
