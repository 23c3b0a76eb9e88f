"""dnsmasq as pxefilterd's own child (``dnsmasq_child_command``): its argv,
its checks, the process and its death with pxefilterd, and the service
that starts, restarts and stops it (real processes: ``sleep`` stands for
dnsmasq)."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from pxefilterd import child
from pxefilterd import commands
from pxefilterd import dnsmasq
from pxefilterd import service
from pxefilterd import supervisor
from tests import fake_dnsmasq
from tests.unit.test_service import Harness
from tests.unit.test_service import made_by
from tests.waiting import wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


# -- the argv -----------------------------------------------------------------

def test_argv_keeps_dnsmasq_in_the_foreground():
    assert child.argv_from_line('/usr/sbin/dnsmasq --conf-file=/x') == [
        '/usr/sbin/dnsmasq', '--conf-file=/x', '--keep-in-foreground']
    for flag in ('-k', '--keep-in-foreground', '-d', '--no-daemon'):
        assert child.argv_from_line('dnsmasq %s' % flag) == ['dnsmasq', flag]
    # a wrapper that execs dnsmasq keeps the pid
    assert child.argv_from_line('ip netns exec ns1 dnsmasq -C /x') == [
        'ip', 'netns', 'exec', 'ns1', 'dnsmasq', '-C', '/x',
        '--keep-in-foreground']


@pytest.mark.parametrize('line, why', [
    ('', 'empty'),
    ('dnsmasq --conf-file=$(cat /x)', 'shell expansions'),
    ('dnsmasq `x`', 'shell expansions'),
    ('/usr/bin/sleep 10', 'names no dnsmasq'),
    ('dnsmasq "unbalanced', 'cannot be parsed'),
])
def test_argv_refused(line, why):
    with pytest.raises(ValueError, match=why):
        child.argv_from_line(line)


def _group(**values):
    base = dict(dnsmasq_child_command='', dnsmasq_start_command='',
                dnsmasq_stop_command='', dnsmasq_reload_command='',
                dnsmasq_pid_file='')
    base.update(values)
    return types.SimpleNamespace(**base)


def test_problems():
    assert child.problems(_group()) == []
    assert child.problems(_group(
        dnsmasq_child_command='dnsmasq --conf-file=/x')) == []
    found = child.problems(_group(dnsmasq_child_command='dnsmasq',
                                  dnsmasq_start_command='systemctl start x',
                                  dnsmasq_pid_file='/run/x.pid'))
    assert found == ['[dnsmasq_pxe_filter] dnsmasq_child_command cannot be '
                     'combined with dnsmasq_start_command, dnsmasq_pid_file: '
                     'pxefilterd starts, watches, reloads and stops its '
                     'child dnsmasq itself']
    # a word dnsmasq refuses (it would exit at every start)
    found = child.problems(_group(
        dnsmasq_child_command='dnsmasq --conf-file /x'))
    assert len(found) == 1 and 'junk found in command line' in found[0]
    found = child.problems(_group(dnsmasq_child_command='kill $PID'))
    assert found and 'shell expansions' in found[0]


# -- the process --------------------------------------------------------------

def _alive(pid):
    return fake_dnsmasq.alive(pid)


def test_child_runs_is_observed_signalled_and_stopped():
    proc = child.Child([shutil.which('sleep'), '60'], timeout=5)
    seen = proc.observe()
    assert seen.state == dnsmasq.GONE and seen.detail == 'not started yet'
    proc.spawn()
    pid = proc.pid
    seen = proc.observe()
    assert (seen.state, seen.pid) == (dnsmasq.RUNNING, pid)
    # its own session: a signal to pxefilterd's process group misses it
    assert os.getsid(pid) == pid
    proc.stop()
    assert not _alive(pid)
    seen = proc.observe()
    assert seen.state == dnsmasq.GONE
    assert seen.detail == 'pid %d was killed by SIGTERM' % pid
    with pytest.raises(commands.CommandError, match='does not run'):
        proc.send(signal.SIGHUP)
    proc.stop()     # nothing to stop: no error


def test_a_dead_child_is_reaped_and_said_gone():
    proc = child.Child([sys.executable, '-c', 'raise SystemExit(3)'])
    proc.spawn()
    wait_for(lambda: proc.observe().state == dnsmasq.GONE, 10)
    assert proc.observe().detail == 'pid %d exited with status 3' % proc.pid
    # reaped: no zombie left behind
    assert not os.path.exists('/proc/%d' % proc.pid)


def test_a_child_ignoring_sigterm_is_killed():
    script = ('import signal, time\n'
              'signal.signal(signal.SIGTERM, signal.SIG_IGN)\n'
              'print("ready", flush=True)\n'
              'time.sleep(60)\n')
    proc = child.Child([sys.executable, '-c', script], timeout=0.5)
    proc.spawn()
    time.sleep(0.3)     # (the handler is set)
    proc.stop()
    assert 'SIGKILL' in proc.observe().detail


def test_a_program_that_cannot_run_is_a_failed_start(tmp_path):
    proc = child.Child([str(tmp_path / 'no-such-dnsmasq')])
    with pytest.raises(commands.CommandError, match='could not be started'):
        proc.spawn()
    handle = child.ChildHandle(proc)
    handle.start()
    _seen, done = handle.news()
    assert 'could not be started' in done.error
    assert handle.news()[1] is None     # told once


def test_spawn_again_stops_the_previous_one():
    proc = child.Child([shutil.which('sleep'), '60'], timeout=5)
    proc.spawn()
    first = proc.pid
    proc.spawn()
    assert proc.pid != first and not _alive(first)
    proc.stop()


_PARENT = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, %r)
    from pxefilterd import child
    c = child.Child(['sleep', '60'])
    c.spawn()
    print(c.pid, flush=True)
    time.sleep(60)
''')


def test_the_child_dies_with_pxefilterd_killed():
    """SIGKILL of the parent: no exit path runs, the kernel kills the
    child (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen([sys.executable, '-c', _PARENT % REPO],
                              stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait(5)
        wait_for(lambda: not _alive(pid), 5, 'the child to die')
    finally:
        parent.kill()
        parent.wait(5)


# -- the service --------------------------------------------------------------

class ChildHarness(Harness):
    """The service harness, dnsmasq being a child (``sleep``)."""

    def __init__(self, tmp_path, argv=None, **kwargs):
        super().__init__(tmp_path, **kwargs)
        self.child = child.Child(argv or [shutil.which('sleep'), '600'],
                                 timeout=5)
        self.cmds = child.ChildCommands(self.child)
        self.svc = service.Service(
            self.settings, self.client, self.store, self.cmds,
            guard_factory=None, notifier=self.notifier, child=self.child)

    def cleanup(self):
        super().cleanup()
        self.child.stop()


@pytest.fixture
def child_harness(tmp_path):
    yield from made_by(ChildHarness, tmp_path)


def test_service_starts_the_child_after_the_first_sync_only(child_harness):
    import threading
    h = child_harness()
    h.fake.listing_gate = threading.Event()
    h.start()
    time.sleep(0.5)
    assert h.child.pid is None          # nothing served before the sync
    assert h.svc.report.status()['dnsmasq']['state'] == 'stopped'
    h.fake.listing_gate.set()
    wait_for(lambda: h.svc.ready, 10, 'ready')
    wait_for(lambda: h.svc.supervisor.state is supervisor.State.RUNNING, 5)
    status = h.svc.report.status()
    assert status['dnsmasq']['state'] == 'running'
    assert status['dnsmasq']['child'] is True
    assert status['dnsmasq']['detail'] == ('pid %d, a child of pxefilterd'
                                           % h.child.pid)
    pid = h.child.pid
    assert h.stop() == service.EXIT_OK
    assert not _alive(pid)              # stopped at exit


def test_service_restarts_a_child_that_died(child_harness):
    h = child_harness().start()
    wait_for(lambda: h.svc.supervisor.state is supervisor.State.RUNNING, 10)
    first = h.child.pid
    os.kill(first, signal.SIGKILL)
    # died young (a failed start: 1 s backoff), then started again
    wait_for(lambda: h.child.pid not in (None, first)
             and _alive(h.child.pid), 10, 'a new child')
    wait_for(lambda: h.svc.supervisor.starts == 2, 5, 'the start counted')
    assert h.stop() == service.EXIT_OK


_HUP_COUNTER = ('import signal, sys, time\n'
                'def hup(*_):\n'
                '    open(sys.argv[1], "a").write("hup\\n")\n'
                'signal.signal(signal.SIGHUP, hup)\n'
                'while True: time.sleep(1)\n')


def test_service_reload_is_a_sighup_from_the_loop_thread(
        child_harness, tmp_path, monkeypatch):
    """The writer's reload (here: any change, max_burst being 0) is a SIGHUP
    sent by the loop thread, the one that spawns and observes the child:
    sent from another, its look at the child could tell the guard "no
    child" after the loop thread announced the next one."""
    monkeypatch.setattr(child, 'SETTLE', 0.0)
    marker = tmp_path / 'hups'
    h = child_harness(argv=[sys.executable, '-c', _HUP_COUNTER, str(marker)],
                      settings=service.Settings(
                          sync_period=0.2, poll_interval=0.05, lock_wait=0,
                          max_burst=0))
    senders = []
    send = h.child.send

    def recorded(signum):
        senders.append((signum, threading.current_thread()))
        return send(signum)

    h.child.send = recorded
    h.start()
    wait_for(lambda: h.svc.supervisor.state is supervisor.State.RUNNING, 10)
    time.sleep(0.5)     # (its handler is set)
    for i in range(3):
        h.fake.add_port(h.node_a, '52:54:00:00:01:%02x' % i)
    wait_for(marker.exists, 10, 'the SIGHUP')
    assert h.svc.writer.reloads >= 1
    hups = [t for signum, t in senders if signum == signal.SIGHUP]
    assert hups and all(t is h.thread for t in hups), hups
    assert h.stop() == service.EXIT_OK


def test_signals_ignored_by_pxefilterd_are_not_ignored_by_its_child():
    """Started under nohup, pxefilterd would pass an ignored SIGHUP on to
    dnsmasq across exec: its reloads would do nothing."""
    now = [100.0]
    proc = child.Child([shutil.which('sleep'), '60'], timeout=5,
                       clock=lambda: now[0])
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        proc.spawn()
    finally:
        signal.signal(signal.SIGHUP, before)
    try:
        now[0] += child.SETTLE
        proc.reload()
        wait_for(lambda: proc.observe().state == dnsmasq.GONE, 5)
        assert proc.observe().detail == 'pid %d was killed by SIGHUP' % (
            proc.pid)
    finally:
        proc.stop()


def test_a_reload_of_a_child_just_started_is_held_until_it_settled():
    """dnsmasq dies of a SIGHUP before it sets its handler (``sleep`` dies
    of any): a reload asked for at once is sent once the child has been up
    SETTLE seconds, by the first look after."""
    now = [100.0]
    proc = child.Child([shutil.which('sleep'), '60'], timeout=5,
                       clock=lambda: now[0])
    try:
        proc.spawn()
        pid = proc.pid
        held = proc.reload()
        assert proc.reload() is held        # one held reload, asked twice
        now[0] += child.SETTLE - 0.1
        assert proc.observe().state == dnsmasq.RUNNING
        time.sleep(0.2)
        assert _alive(pid)                  # held
        # not done while held: the writer must not take it for done (it
        # would loosen the wildcard, drop deny records, before a re-read)
        assert not held.done()
        now[0] += 0.1
        proc.observe()                      # settled: sent now
        assert held.result(0) == ''
        wait_for(lambda: proc.observe().state == dnsmasq.GONE, 5)
        assert proc.observe().detail == 'pid %d was killed by SIGHUP' % pid
        # once settled, a reload is sent at once
        proc.spawn()
        now[0] += child.SETTLE
        assert proc.reload().result(0) == ''
        wait_for(lambda: proc.observe().state == dnsmasq.GONE, 5)
        # a new child ends the reload held for the one before: it reads
        # every file as it starts
        proc.spawn()
        held = proc.reload()
        proc.spawn()
        assert held.result(0) == ''
        now[0] += child.SETTLE
        assert proc.observe().state == dnsmasq.RUNNING
        time.sleep(0.2)
        assert proc.observe().state == dnsmasq.RUNNING
        # a child that exits with a reload held: that reload failed
        proc.stop()
        proc.spawn()
        held = proc.reload()
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: proc.observe().state == dnsmasq.GONE, 5)
        assert isinstance(held.exception(0), commands.CommandError)
    finally:
        proc.stop()


def test_a_child_that_never_stays_up_is_fatal(child_harness, monkeypatch):
    """Whether the first look finds it still running or already gone,
    each start fails at once (waitpid: no START_GRACE to wait out): two
    attempts take the one 1 s backoff between them."""
    monkeypatch.setattr(supervisor, 'START_ATTEMPTS', 2)
    h = child_harness(argv=[shutil.which('false')])
    h.start()
    h.thread.join(20)
    assert not h.thread.is_alive()
    assert h.code == service.EXIT_FAILURE
    assert h.svc.supervisor.failures == 2
    assert h.svc.supervisor.starts == 2


# -- the guard stops a child dnsmasq ----------------------------------------

def _named_dnsmasq(tmp_path, name='dm'):
    """A long-lived process named dnsmasq (not our child's child)."""
    pidfile = str(tmp_path / ('%s.pid' % name))
    fake_dnsmasq.start(pidfile)
    with open(pidfile) as f:
        return pidfile, int(f.read())


def test_the_guard_stops_the_child_it_was_told_of(tmp_path):
    """Two processes named dnsmasq: the guard stops the last one it was
    told of, never the one before."""
    from pxefilterd import guard
    pidfile, pid = _named_dnsmasq(tmp_path)
    other_pidfile, other = _named_dnsmasq(tmp_path, 'other')
    try:
        assert guard._is_dnsmasq(other)     # (the guard would stop it)
        stop = child.ChildCommands(child.Child(['dnsmasq'], timeout=2)).stop
        g = guard.Guard(stop, None)
        g.arm()
        g.child_pid(other)          # told, then the child changed...
        g.child_pid(pid)
        g.close(wait=10)            # ...and the daemon died
        assert g.proc.returncode == guard.EXIT_ORPHANED
        wait_for(lambda: not _alive(pid), 5, 'the child to be stopped')
        assert _alive(other)        # only the one it was told of
    finally:
        fake_dnsmasq.stop(pidfile)
        fake_dnsmasq.stop(other_pidfile)


def test_the_guard_never_kills_what_is_not_dnsmasq(tmp_path):
    from pxefilterd import guard
    other = subprocess.Popen([shutil.which('sleep'), '60'])
    try:
        stop = child.ChildCommands(child.Child(['dnsmasq'], timeout=2)).stop
        g = guard.Guard(stop, None)
        g.arm()
        g.child_pid(other.pid)      # (a reused pid)
        g.close(wait=10)
        assert g.proc.returncode == guard.EXIT_ORPHANED
        assert other.poll() is None
        g = guard.Guard(stop, None)
        g.arm()
        g.child_pid(None)           # the child ended: nothing to stop
        g.close(wait=10)
        assert g.proc.returncode == guard.EXIT_ORPHANED
    finally:
        other.kill()
        other.wait()


def test_the_service_tells_the_guard_each_child(child_harness):
    told = []

    class Guard:
        def __init__(self, stop, lock_fd):
            self.proc = types.SimpleNamespace(returncode=None)

        def alive(self):
            return True

        def arm(self):
            told.append('arm')

        def child_pid(self, pid):
            told.append(pid)

        def disarm(self):
            told.append('disarm')

    h = child_harness()
    h.svc.helpers.guard_factory = Guard
    h.start()
    wait_for(lambda: h.svc.supervisor.state is supervisor.State.RUNNING, 10)
    pid = h.child.pid
    assert h.stop() == service.EXIT_OK
    assert told == ['arm', pid, None, 'disarm']
