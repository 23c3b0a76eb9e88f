"""The writer: strategies by size, pacing, and one failure policy for the
reload command.  Real files, real commands, a fake clock."""

import os
import sys

import pytest

from pxefilterd import commands
from pxefilterd import hostsdir
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import writer as writer_mod
from pxefilterd.policy import Action

RECORDER = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        'record_command.py')


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def mac(i):
    return '52:54:00:00:%02x:%02x' % divmod(i, 256)


class Rig:
    def __init__(self, tmp_path, reload_code=None, base=False,
                 max_burst=10, burst_rate=100):
        self.dir = tmp_path / 'hostsdir'
        self.dir.mkdir()
        self.log = tmp_path / 'commands.log'
        self.store = hostsdir.HostsDir(
            str(self.dir), base_path=str(tmp_path / 'hosts') if base
            else None)
        self.store.lock()
        self.settings = service.Settings(max_burst=max_burst,
                                         burst_rate=burst_rate)
        argv = ([sys.executable, RECORDER, str(self.log), 'reload',
                 str(self.dir), str(reload_code)]
                if reload_code is not None else [])
        self.reload = commands.Command('reload', argv, timeout=10)
        self.clock = Clock()
        self.writer = writer_mod.Writer(self.store, self.reload,
                                        lambda: self.settings, self.clock)

    def reloads(self):
        if not self.log.exists():
            return 0
        return self.log.read_text().count('\n')

    def desired(self, n, action=Action.DENY, unknown=Action.DENY):
        return policy.Desired(macs={mac(i): action for i in range(n)},
                              unknown=unknown)

    def known(self, n):
        return {mac(i): None for i in range(n)}

    def on_disk(self):
        return {name: (self.dir / name).read_text()
                for name in os.listdir(self.dir)}


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kwargs):
        r = Rig(tmp_path, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.store.unlock()


def test_before_dnsmasq_runs_everything_is_written_at_once(rig):
    r = rig()
    assert r.writer.converge(r.desired(50), r.known(50)) == 51
    assert r.writer.pending == 0
    assert len(r.on_disk()) == 51


def test_nothing_to_do_writes_nothing(rig):
    r = rig()
    r.writer.converge(r.desired(5), r.known(5))
    written = r.store.files_written
    assert r.writer.converge(r.desired(5), r.known(5)) == 0
    assert r.store.files_written == written
    assert r.writer.next_due() == float('inf')


def test_while_serving_without_reload_writes_are_paced(rig):
    r = rig(max_burst=10, burst_rate=100)
    r.writer.converge(r.desired(40), r.known(40))
    r.writer.dnsmasq_started()
    allow = r.desired(40, Action.ALLOW)
    assert r.writer.converge(allow, r.known(40)) == 10     # the burst
    assert r.writer.pending == 30
    # the next chunk is due when 5 tokens have come back (50 ms at 100/s)
    assert r.writer.next_due() == pytest.approx(0.05)
    r.clock.now += 0.1
    assert r.writer.converge(allow, r.known(40)) == 10
    r.clock.now += 10
    assert r.writer.converge(allow, r.known(40)) == 10     # capped at burst
    assert r.writer.converge(allow, r.known(40)) == 0
    r.clock.now += 0.1
    assert r.writer.converge(allow, r.known(40)) == 10
    assert r.writer.pending == 0
    assert all(v.count(',ignore') == 0 for k, v in r.on_disk().items()
               if k != 'unknown_hosts_filter')


def test_big_change_set_with_reload_is_written_at_once_then_reloaded(rig):
    r = rig(reload_code=0, max_burst=10)
    r.writer.converge(r.desired(40), r.known(40))
    r.writer.dnsmasq_started()
    assert r.writer.converge(r.desired(40, Action.ALLOW), r.known(40)) == 40
    assert r.reloads() == 1
    assert r.writer.pending == 0


def test_small_change_set_needs_no_reload(rig):
    r = rig(reload_code=0, max_burst=10)
    r.writer.converge(r.desired(40), r.known(40))
    r.writer.dnsmasq_started()
    desired = r.desired(40)
    desired.macs[mac(3)] = Action.ALLOW
    assert r.writer.converge(desired, r.known(40)) == 1
    assert r.reloads() == 0


def test_failed_reload_rewrites_the_burst_paced_and_backs_off(rig):
    """dnsmasq may have missed any of the 40 events: each file is written
    again at the paced rate, which makes dnsmasq read it without a reload;
    the reload rests meanwhile (1 s, then 2 s...)."""
    r = rig(reload_code=1, max_burst=10, burst_rate=100)
    r.writer.converge(r.desired(40), r.known(40))
    r.writer.dnsmasq_started()
    allow = r.desired(40, Action.ALLOW)
    assert r.writer.converge(allow, r.known(40)) == 40
    assert r.reloads() == 1 and r.writer.reload_failures == 1
    assert not r.writer.reload_usable()
    assert r.writer.pending == 40
    before = r.store.files_written
    rewritten = r.writer.converge(allow, r.known(40))
    assert rewritten == 10                  # a burst's worth at once
    for _ in range(3):
        r.clock.now += 0.1
        rewritten += r.writer.converge(allow, r.known(40))
    assert rewritten == 40                  # the rest at 100/s
    assert r.store.files_written - before == 40
    assert r.writer.pending == 0
    assert r.reloads() == 1          # no reload while it rests
    # a big change while the reload rests (1 s) is paced, not reloaded
    r.clock.now += 0.5
    assert r.writer.converge(r.desired(40), r.known(40)) == 10
    assert r.reloads() == 1
    # after the backoff it is tried again, and fails again: 2 s now
    r.clock.now += 5
    r.writer.converge(r.desired(40), r.known(40))
    r.clock.now += 5
    r.writer.converge(r.desired(40), r.known(40))
    r.clock.now += 5
    r.writer.converge(r.desired(40, Action.ALLOW), r.known(40))
    assert r.reloads() == 2
    assert r.writer._backoff.wait == 2.0


def test_dnsmasq_restart_clears_what_was_in_doubt(rig):
    r = rig(reload_code=1, max_burst=10)
    r.writer.converge(r.desired(40), r.known(40))
    r.writer.dnsmasq_started()
    r.writer.converge(r.desired(40, Action.ALLOW), r.known(40))
    assert r.writer.pending == 40
    r.writer.dnsmasq_started()       # it re-read every file
    assert r.writer.converge(r.desired(40, Action.ALLOW), r.known(40)) == 0


def test_compaction_removes_gone_macs_and_reloads(rig):
    r = rig(reload_code=0)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    assert r.writer.compact(r.desired(5), r.known(3)) == 2
    assert set(r.on_disk()) == {mac(0), mac(1), mac(2),
                                'unknown_hosts_filter'}
    assert r.reloads() == 1


def test_compaction_with_a_failing_reload_restores_the_files(rig):
    """dnsmasq still holds the records of the removed files: without the
    reload they must come back, or nothing could correct them later."""
    r = rig(reload_code=1)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    assert r.writer.compact(r.desired(5), r.known(3)) == 2
    assert len(r.on_disk()) == 4
    # the next decision no longer mentions them (ironic does not know
    # them, and they have no file): the writer puts them back anyway
    desired = policy.Desired(macs={mac(i): Action.DENY for i in range(3)},
                             unknown=Action.ALLOW)
    assert r.writer.converge(desired, r.known(3)) == 3    # 2 + wildcard
    assert len(r.on_disk()) == 6
    assert r.on_disk()[mac(4)] == mac(4) + '\n'      # the unknown state


def test_compaction_needs_a_usable_reload(rig):
    r = rig()
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    assert r.writer.compact(r.desired(5), r.known(3)) is None
    assert len(r.on_disk()) == 6


def test_base_file_before_start_and_a_failed_rebase_reload(rig, tmp_path):
    r = rig(reload_code=1, base=True, max_burst=10, burst_rate=1000)
    assert r.writer.converge(r.desired(40), r.known(40)) == 41
    assert set(r.on_disk()) == {'unknown_hosts_filter'}
    assert (tmp_path / 'hosts').read_text().count('\n') == 40
    r.writer.dnsmasq_started()
    allow = r.desired(40, Action.ALLOW)
    r.writer.converge(allow, r.known(40))    # rebase, reload fails
    assert r.reloads() == 1
    # dnsmasq did not re-read the base file: every record is written
    # again as a per-MAC file, paced
    for _ in range(10):
        r.clock.now += 1
        r.writer.converge(allow, r.known(40))
    files = r.on_disk()
    assert len(files) == 41
    assert files[mac(7)] == mac(7) + '\n'
    assert files['unknown_hosts_filter'] == hostsdir.render(
        macs.WILDCARD, Action.DENY).decode()


# -- foreign entries: dnsmasq must forget what it read from them -----------

def test_a_foreign_entry_is_followed_by_a_reload(rig):
    r = rig(reload_code=0)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    assert not r.writer.foreign_live()
    r.writer.forget('foreign file evil')
    assert r.reloads() == 1
    assert not r.writer.foreign_live()    # the reload succeeded


def test_before_dnsmasq_serves_the_reload_waits_until_it_does(rig):
    """A start in flight may have read the entry: reload once it serves."""
    r = rig(reload_code=0)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.forget('foreign file evil')
    assert r.reloads() == 0 and r.writer.foreign_live()
    r.writer.dnsmasq_started()
    r.writer.converge(r.desired(5), r.known(5))
    assert r.reloads() == 1 and not r.writer.foreign_live()


def test_a_failed_forget_reload_rewrites_everything_and_is_retried(rig):
    r = rig(reload_code=1, max_burst=10, burst_rate=100)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    before = r.store.files_written
    r.writer.forget('foreign file evil')
    assert r.reloads() == 1 and r.writer.foreign_live()
    # every file of ours is written again: ours is the newest record
    r.writer.converge(r.desired(5), r.known(5))
    assert r.store.files_written - before == 6     # 5 MACs + the wildcard
    # the reload is tried again after its backoff, until it succeeds
    r.clock.now += 5
    r.writer.converge(r.desired(5), r.known(5))
    assert r.reloads() == 2 and r.writer.foreign_live()


def test_without_a_reload_command_a_foreign_entry_rewrites_everything(rig):
    r = rig(reload_code=None, max_burst=10, burst_rate=100)
    r.writer.converge(r.desired(5), r.known(5))
    r.writer.dnsmasq_started()
    before = r.store.files_written
    r.writer.forget('foreign file evil')
    assert r.writer.foreign_live()
    r.writer.converge(r.desired(5), r.known(5))
    assert r.store.files_written - before == 6
