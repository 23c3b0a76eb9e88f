"""Sparse records: with deny_unknown_macs only the keys that change an
answer get a record; compaction drops the stale ones in a safe order.

The pure part (policy) against a model of dnsmasq's answers; the writer
with real files, a recording reload command and a runner whose reload
finishes when the test says so.
"""

import concurrent.futures
import os
import sys

from hypothesis import given, settings, strategies as st

from pxefilterd import commands
from pxefilterd import hostsdir
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import writer as writer_mod
from pxefilterd.policy import Action
from tests.waiting import wait_for

ALLOW, DENY = Action.ALLOW, Action.DENY
RECORDER = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        'record_command.py')
STRICT = policy.Options(deny_unknown_macs=True)
A1, A2, B1, C1, G1 = ('52:54:00:00:00:a1', '52:54:00:00:00:a2',
                      '52:54:00:00:00:b1', '52:54:00:00:00:c1',
                      '52:54:00:00:00:99')
ID_A = 'id:ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:01'
WAITING = policy.NodeInfo('inspect wait', 'agent')


def snap(inspected=(), conflicts=None):
    ports = {A1: 'a', A2: 'a', ID_A: 'a', B1: 'b', C1: 'c'}
    return policy.Snapshot(ports=ports,
                           nodes=dict.fromkeys(inspected, WAITING),
                           conflicts=conflicts or {})


# -- policy ------------------------------------------------------------------

def test_with_deny_unknown_macs_only_allowed_keys_get_a_record():
    desired = policy.decide(snap({'a'}), STRICT)
    assert desired.sparse
    assert desired.files == {A1: ALLOW, A2: ALLOW, ID_A: ALLOW}
    # the decision itself is complete: explain and the decision log use it
    assert desired.macs == {A1: ALLOW, A2: ALLOW, ID_A: ALLOW, B1: DENY,
                            C1: DENY}
    assert desired.counts() == (3, 2)
    assert policy.decide(snap(), STRICT).files == {}


def test_a_key_with_a_record_keeps_one_saying_its_decision():
    """dnsmasq may hold an allow for it: only a newer deny overrides it."""
    desired = policy.decide(snap(), STRICT, cached=[A1, ID_A, G1])
    assert desired.files == {A1: DENY, ID_A: DENY, G1: DENY}


def test_a_conflict_gets_no_allow_record():
    claims = ((('p1', 'a'), ('p2', 'b')))
    desired = policy.decide(snap({'a'}, {A2: claims}), STRICT)
    assert desired.files == {A1: ALLOW, ID_A: ALLOW}
    assert desired.macs[A2] is DENY


def test_every_port_gets_a_record_where_unknown_macs_may_be_allowed():
    for options in (policy.Options(), policy.Options(auto_discovery=True),
                    policy.Options(deny_unknown_macs=True,
                                   sparse_records=False)):
        desired = policy.decide(snap({'a'}), options, cached=[G1])
        assert not desired.sparse
        assert desired.files is desired.macs
        assert set(desired.files) == {A1, A2, ID_A, B1, C1, G1}
    assert not policy.decide(snap(), policy.Options()).sparse


def test_fail_closed_is_unchanged():
    desired = policy.fail_closed([A1, B1])
    assert desired.files == {A1: DENY, B1: DENY}
    assert desired.unknown is DENY


def test_the_wildcard_is_loosened_last_and_tightened_first():
    desired = policy.Desired(macs={A1: DENY, B1: ALLOW}, unknown=ALLOW)
    assert list(policy.diff({}, desired)) == [A1, B1, macs.WILDCARD]
    desired = policy.Desired(macs={A1: DENY, B1: ALLOW}, unknown=DENY)
    assert list(policy.diff({macs.WILDCARD: ALLOW}, desired)) == [
        macs.WILDCARD, A1, B1]


def test_stale_records():
    known = dict.fromkeys([A1, A2, ID_A, B1, C1])
    sparse = policy.decide(snap({'a'}), STRICT, cached=[A1, B1, G1])
    assert sorted(policy.stale(sparse, [A1, B1, G1], known)) == sorted(
        [B1, G1])
    assert policy.kept(sparse, known) == {A1: ALLOW, A2: ALLOW,
                                          ID_A: ALLOW}
    every = policy.decide(snap({'a'}), policy.Options(), cached=[B1, G1])
    assert policy.stale(every, [B1, G1], known) == [G1]
    assert G1 not in policy.kept(every, known)


KEYS = [A1, A2, ID_A, B1, C1, G1, '52:54:00:00:00:d1']


@settings(max_examples=300, deadline=None)
@given(ports=st.dictionaries(st.sampled_from(KEYS[:-1]),
                             st.sampled_from(['a', 'b', None])),
       inspected=st.sets(st.sampled_from(['a', 'b'])),
       cached=st.sets(st.sampled_from(KEYS)),
       mode=st.sampled_from(['strict', 'default', 'discovery', 'per-port']))
def test_dnsmasq_answers_every_key_as_decided(ports, inspected, cached,
                                              mode):
    """dnsmasq's answer for a key is its own record, else the wildcard's:
    with the records the hostsdir holds it is the decision, for every key
    ironic knows or that had a record."""
    options = {'strict': STRICT, 'default': policy.Options(),
               'discovery': policy.Options(auto_discovery=True),
               'per-port': policy.Options(deny_unknown_macs=True,
                                          sparse_records=False)}[mode]
    snapshot = policy.Snapshot(ports=ports,
                               nodes=dict.fromkeys(inspected, WAITING))
    desired = policy.decide(snapshot, options, cached)
    for key in set(KEYS):
        answer = desired.files.get(key, desired.unknown)
        assert answer is desired.macs.get(key, desired.unknown)
        if key in ports or key in cached:
            assert answer is policy.explain(key, snapshot, options).action \
                or key not in ports
    # every key with a record keeps one (dnsmasq may hold its allow)
    assert set(cached) <= set(desired.files)
    if mode == 'strict':
        assert all(desired.files[k] is ALLOW for k in desired.files
                   if k not in cached)


# -- the writer --------------------------------------------------------------

class Manual:
    """A command runner whose commands finish when the test says so."""

    def __init__(self):
        self.jobs = []

    def submit(self, command):
        future = concurrent.futures.Future()
        self.jobs.append((command, future))
        return future

    def finish(self, ok=True):
        command, future = self.jobs.pop(0)
        if ok:
            future.set_result(command.run())
        else:
            future.set_exception(commands.CommandError('reload failed'))


class Rig:
    def __init__(self, tmp_path, max_burst=10, burst_rate=100, reload=True):
        self.dir = tmp_path / 'hostsdir'
        self.dir.mkdir()
        self.log = tmp_path / 'commands.log'
        self.store = hostsdir.HostsDir(str(self.dir))
        self.store.check()
        self.settings = service.Settings(max_burst=max_burst,
                                         burst_rate=burst_rate)
        argv = ([sys.executable, RECORDER, str(self.log), 'reload',
                 str(self.dir), '0'] if reload else [])
        self.runner = Manual()
        self.now = 100.0
        self.writer = writer_mod.Writer(
            self.store, commands.Command('reload', argv, timeout=10),
            lambda: self.settings, lambda: self.now, runner=self.runner)
        self.snapshot = snap()

    def decide(self, inspected=(), options=STRICT):
        self.snapshot = snap(inspected)
        return policy.decide(self.snapshot, options, self.store.cached())

    def converge(self, inspected=(), options=STRICT):
        return self.writer.converge(self.decide(inspected, options),
                                    self.snapshot.ports)

    def files(self):
        return {name: (self.dir / name).read_text()
                for name in os.listdir(self.dir)}


def test_allowed_then_denied_keeps_a_deny_record(tmp_path):
    r = Rig(tmp_path)
    r.converge()
    r.writer.dnsmasq_started()
    assert set(r.files()) == {'unknown_hosts_filter'}
    assert r.converge({'a'}) == 3
    assert r.files()[A1] == A1 + '\n'
    assert r.converge() == 3
    # never deleted: dnsmasq would keep the allow until a reload
    assert r.files()[A1] == A1 + ',ignore\n'
    assert r.files()[ID_A] == ID_A + ',ignore\n'
    assert B1 not in r.files()
    assert r.converge() == 0


def test_compaction_reloads_first_when_the_denies_are_fresh(tmp_path):
    """A deny dnsmasq may not have read yet is never removed: its older
    allow would be the record dnsmasq keeps."""
    r = Rig(tmp_path)
    r.converge({'a'})
    r.writer.dnsmasq_started()
    r.converge()                        # the three denies: fresh
    desired = r.decide()
    assert r.writer.compact(desired, r.snapshot.ports, threshold=4) is None
    assert r.writer.compact(desired, r.snapshot.ports, threshold=3) == 0
    assert len(r.files()) == 4          # nothing removed: a reload first
    assert r.writer.compact(desired, r.snapshot.ports, 3) is None  # runs
    r.runner.finish()
    assert r.writer.compact(desired, r.snapshot.ports, 3) == 3
    # removed first, then the reload that drops their records
    assert set(r.files()) == {'unknown_hosts_filter'}
    assert len(r.runner.jobs) == 1
    r.runner.finish()
    assert r.converge() == 0
    assert r.writer.reloads == 2
    assert r.store.cached() == []


def test_a_failed_compaction_reload_writes_the_denies_back(tmp_path):
    r = Rig(tmp_path)
    r.converge({'a'})
    r.writer.dnsmasq_started()
    r.converge()
    r.writer.dnsmasq_started()          # (as if dnsmasq read them)
    assert r.writer.compact(r.decide(), r.snapshot.ports, 1) == 3
    r.runner.finish(ok=False)
    r.now += 1
    assert r.converge() == 3
    assert r.files()[A1] == A1 + ',ignore\n'
    # and they are fresh again: not removed before dnsmasq re-reads them
    r.now += 100
    assert r.writer.compact(r.decide(), r.snapshot.ports, 1) == 0


def test_a_fresh_deny_is_not_removed_but_a_read_one_is(tmp_path):
    r = Rig(tmp_path)
    r.converge({'a'})
    r.writer.dnsmasq_started()
    r.converge()                                # A1, A2, ID_A denied
    r.writer.run_reload('test')
    r.runner.finish()                           # dnsmasq read them
    r.store.write(A1, DENY)                     # A1 written again: fresh
    assert r.writer.compact(r.decide(), r.snapshot.ports) == 2
    assert set(r.files()) == {'unknown_hosts_filter', A1}


def test_the_wildcard_waits_for_the_reload_of_a_big_change_set(tmp_path):
    """Turning deny_unknown_macs off: every port needs its deny record
    before unknown MACs may boot."""
    r = Rig(tmp_path, max_burst=3)
    r.converge()
    r.writer.dnsmasq_started()
    loose = policy.Options()
    assert r.converge({'a'}, loose) == 5        # every port; no wildcard
    assert r.files()['unknown_hosts_filter'].count(',ignore') == 2
    assert len(r.runner.jobs) == 1 and r.writer.pending == 1
    assert r.writer.next_due() == float('inf')  # the reload wakes the loop
    assert r.converge({'a'}, loose) == 0        # still running
    r.runner.finish()
    assert r.converge({'a'}, loose) == 1
    assert r.files()['unknown_hosts_filter'] == '*:*:*:*:*:*\n20-:\n'
    assert r.writer.pending == 0


def test_paced_writes_loosen_the_wildcard_last(tmp_path):
    r = Rig(tmp_path, max_burst=3, burst_rate=10, reload=False)
    r.converge()
    r.writer.dnsmasq_started()
    loose = policy.Options()
    seen = []
    for _ in range(5):
        r.converge({'a'}, loose)
        seen.append((len(r.files()) - 1,
                     ',ignore' not in r.files()['unknown_hosts_filter']))
        r.now += 0.3
    # the wildcard allows only once all five port records are on disk
    assert all(count == 5 for count, loose_now in seen if loose_now)
    assert seen[-1] == (5, True)


def test_explain_names_the_wildcard_rule(tmp_path):
    import io
    from pxefilterd import explain as explain_mod
    r = Rig(tmp_path)
    r.converge({'a'})
    for key, rule in ((B1, 'a port that may not boot is ignored like any '
                       'unknown MAC (deny_unknown_macs)'),
                      (G1, 'unknown MACs are ignored')):
        result = explain_mod.answer(
            key, policy.explain(key, r.snapshot, STRICT),
            explain_mod.ironic_facts(('port-b', 'b') if key == B1 else None,
                                     {}, 1, STRICT),
            records=explain_mod.records_mode(STRICT))
        explain_mod.add_disk(result, r.store, key)
        assert result['serves']['says'] == 'deny'
        assert result['serves']['agrees']
        assert result['serves']['rule'] == (
            'the wildcard rule, no record needed: ' + rule)
        out = io.StringIO()
        explain_mod.render(result, out)
        assert 'unknown_hosts_filter: the wildcard rule, no record needed' \
            in out.getvalue()
    result = explain_mod.answer(A1, policy.explain(A1, r.snapshot, STRICT),
                                {}, records='sparse')
    explain_mod.add_disk(result, r.store, A1)
    assert result['serves']['rule'] is None
    assert result['serves']['says'] == 'allow'
    # an allowed port whose file is missing is not "no record needed"
    os.unlink(r.dir / A1)
    result = explain_mod.answer(
        A1, policy.explain(A1, r.snapshot, STRICT),
        explain_mod.ironic_facts(('port-a', 'a'), {}, 1, STRICT),
        records='sparse')
    explain_mod.add_disk(result, r.store, A1)
    assert result['serves']['says'] == 'deny'
    assert not result['serves']['agrees']
    assert result['serves']['rule'] == (
        'the wildcard rule, for now: its own record is missing')


def test_threshold_compaction_in_the_service(tmp_path):
    from tests.unit.test_service import Harness
    h = Harness(tmp_path, reload=True, settings=service.Settings(
        sync_period=3600, poll_interval=0.05, lock_wait=0,
        options=STRICT, compaction_interval=3600, compaction_threshold=1))
    h.start()
    try:
        a1 = '52:54:00:00:00:a1'
        wait_for(lambda: h.names() == ['start'])
        assert set(h.files()) == {'unknown_hosts_filter'}
        h.inspect(h.node_a)
        wait_for(lambda: h.files().get(a1) == a1 + '\n', what='allow A1')
        h.inspect(h.node_a, 'manageable')
        # deny written, then a reload (it was fresh), then removed and
        # reloaded again
        wait_for(lambda: a1 not in h.files() and
                 h.names() == ['start', 'reload', 'reload'],
                 what='compaction')
        assert set(h.files()) == {'unknown_hosts_filter'}
    finally:
        h.stop()


def test_a_childs_held_reload_holds_the_wildcard_until_it_is_sent(tmp_path):
    """A child dnsmasq's reload asked for in its first SETTLE seconds is
    held (a SIGHUP before dnsmasq sets its handler kills it): until it is
    sent, the writer must not act as if dnsmasq had re-read."""
    import shutil
    from pxefilterd import child as child_mod
    from pxefilterd import dnsmasq
    r = Rig(tmp_path, max_burst=3)
    proc = child_mod.Child([shutil.which('sleep'), '60'], timeout=5,
                           clock=lambda: r.now)
    r.writer = writer_mod.Writer(
        r.store, child_mod._Act('reload', proc.reload, 5),
        lambda: r.settings, lambda: r.now, runner=dnsmasq.Immediate())
    try:
        r.converge()
        proc.spawn()
        r.writer.dnsmasq_started()
        loose = policy.Options()
        assert r.converge({'a'}, loose) == 5    # every port; the reload
        assert r.converge({'a'}, loose) == 0    # held: no wildcard yet
        assert r.files()['unknown_hosts_filter'].count(',ignore') == 2
        r.now += child_mod.SETTLE
        proc.observe()                          # settled: SIGHUP sent
        assert r.converge({'a'}, loose) == 1
        assert r.files()['unknown_hosts_filter'] == '*:*:*:*:*:*\n20-:\n'
    finally:
        proc.stop()
