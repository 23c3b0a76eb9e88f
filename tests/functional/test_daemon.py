"""The real ``pxefilterd`` process, against a fake ironic over HTTP.

Covers what only a real process can show: signals, exit statuses, the
guard after SIGKILL, the lock between two instances, the watcher.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.waiting import wait_for
from tests import fake_dnsmasq
from tests.fake_ironic import FakeIronic

WILD_DENY = '*:*:*:*:*:*,ignore\n20-:,ignore\n'

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_DNSMASQ = os.path.join(TESTS, 'fake_dnsmasq.py')
A1, B1 = '52:54:00:00:00:a1', '52:54:00:00:00:b1'


@pytest.fixture
def fake():
    f = FakeIronic().start()
    f.add_port(f.add_node(), A1)
    f.add_port(f.add_node(), B1)
    yield f
    f.stop()


class Daemon:
    def __init__(self, tmp_path, fake, extra=''):
        self.tmp = tmp_path
        self.hostsdir = tmp_path / 'hostsdir'
        self.hostsdir.mkdir(exist_ok=True)
        self.pidfile = str(tmp_path / 'dnsmasq.pid')
        self.logfile = tmp_path / ('pxefilterd-%d.log' % time.monotonic_ns())
        self.conf = tmp_path / 'pxefilterd.conf'
        cmd = '%s %s %%s %s' % (sys.executable, FAKE_DNSMASQ, self.pidfile)
        self.conf.write_text(
            '[DEFAULT]\nroot_helper =\n'
            '[pxe_filter]\nsync_period = 1\ninspection_poll_interval = 0.1\n'
            '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
            'dnsmasq_start_command = %s\ndnsmasq_stop_command = %s\n'
            'command_timeout = 10\n'
            '[ironic]\nauth_type = none\nendpoint_override = %s\n'
            'timeout = 1\napi_retries = 0\n%s'
            % (self.hostsdir, cmd % 'start', cmd % 'stop', fake.url, extra))
        self.proc = None

    def start(self):
        self.log = open(self.logfile, 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'pxefilterd.cmd.daemon',
             '--config-file', str(self.conf)],
            stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def dnsmasq_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def dnsmasq_running(self):
        pid = self.dnsmasq_pid()
        return pid is not None and fake_dnsmasq.alive(pid)

    def output(self):
        return self.logfile.read_text()

    def files(self):
        return {n: (self.hostsdir / n).read_text()
                for n in os.listdir(self.hostsdir)}

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        pid = self.dnsmasq_pid()
        if pid and fake_dnsmasq.alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def daemon(tmp_path, fake):
    made = []

    def make(extra=''):
        d = Daemon(tmp_path, fake, extra)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def test_sigterm_stops_dnsmasq_and_exits_0(daemon):
    d = daemon().start()
    wait_for(d.dnsmasq_running, what='dnsmasq start')
    assert d.files()[A1] == A1 + ',ignore\n'
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert not d.dnsmasq_running()
    assert 'exiting with status 0: received SIGTERM' in d.output()


def test_sigkill_guard_stops_dnsmasq_within_2s(daemon):
    d = daemon().start()
    wait_for(d.dnsmasq_running, what='dnsmasq start')
    pid = d.dnsmasq_pid()
    d.proc.kill()
    killed = time.monotonic()
    d.proc.wait(10)
    wait_for(lambda: not fake_dnsmasq.alive(pid), timeout=2.0,
             what='the guard to stop dnsmasq')
    elapsed = time.monotonic() - killed
    assert elapsed < 2.0
    wait_for(lambda: 'pxefilterd died without stopping dnsmasq'
             in d.output(), timeout=5)


def test_old_guard_never_stops_a_new_instances_dnsmasq(daemon):
    first = daemon().start()
    wait_for(first.dnsmasq_running)
    old = first.dnsmasq_pid()
    first.proc.kill()
    second = daemon().start()     # same hostsdir, started at once
    wait_for(lambda: second.dnsmasq_pid() not in (None, old), what='restart')
    assert not fake_dnsmasq.alive(old)
    new = second.dnsmasq_pid()
    time.sleep(1.0)   # give a misbehaving guard time to do damage
    assert fake_dnsmasq.alive(new)
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(20) == 0


def test_second_daemon_on_the_same_hostsdir_exits(daemon):
    first = daemon().start()
    wait_for(first.dnsmasq_running)
    second = daemon(extra='[dnsmasq_pxe_filter]\nlock_wait = 0.5\n')
    second.pidfile = first.pidfile + '.second'
    second.start()
    assert second.proc.wait(20) == 1
    assert 'in use by another pxefilterd (pid %d' % first.proc.pid in \
        second.output()
    assert first.dnsmasq_running()


def test_config_error_exits_78_and_touches_nothing(daemon, tmp_path):
    d = daemon(extra='[pxe_filter]\nauto_discovery = True\n'
                     'deny_unknown_macs = True\n')
    (d.hostsdir / 'keep-me').write_text('x')
    d.start()
    assert d.proc.wait(20) == 78
    out = d.output().strip().splitlines()
    assert len(out) == 1 and 'auto_discovery' in out[0]
    assert d.dnsmasq_pid() is None
    assert d.files() == {'keep-me': 'x'}


def test_ironic_down_at_start_dnsmasq_waits(daemon, fake):
    fake.mode = '500'
    d = daemon().start()
    wait_for(lambda: 'First sync failed' in d.output(), what='a failure')
    assert d.files() == {'unknown_hosts_filter': WILD_DENY}
    assert not d.dnsmasq_running()
    fake.mode = 'ok'
    wait_for(d.dnsmasq_running, timeout=20, what='start after recovery')
    assert d.files()[A1] == A1 + ',ignore\n'


@pytest.mark.parametrize('tamper', ['edit', 'delete', 'truncate', 'rename',
                                    'add-foreign', 'add-mac',
                                    'add-long-name'])
def test_tampering_is_healed(daemon, fake, tamper):
    d = daemon().start()
    wait_for(d.dnsmasq_running)
    path = d.hostsdir / A1
    started = time.monotonic()
    if tamper == 'edit':
        path.write_text(A1 + '\n')
    elif tamper == 'delete':
        path.unlink()
    elif tamper == 'truncate':
        path.write_text('')
    elif tamper == 'rename':
        path.rename(d.hostsdir / 'moved-away')
    elif tamper == 'add-foreign':
        (d.hostsdir / 'evil').write_text(A1 + '\n')
    elif tamper == 'add-mac':
        (d.hostsdir / '52:54:00:00:00:c1').write_text('52:54:00:00:00:c1\n')
    elif tamper == 'add-long-name':
        # its quarantine name used to exceed NAME_MAX: the daemon exited
        (d.hostsdir / ('x' * 250)).write_text(A1 + '\n')
    want = {A1: A1 + ',ignore\n', B1: B1 + ',ignore\n',
            'unknown_hosts_filter': WILD_DENY}
    if tamper == 'add-mac':
        want['52:54:00:00:00:c1'] = '52:54:00:00:00:c1,ignore\n'
    wait_for(lambda: d.files() == want, timeout=5, what='heal')
    healed = time.monotonic() - started
    wait_for(lambda: 'Hostsdir tampering' in d.output(), timeout=5)
    assert healed < 5
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0


def test_noop_driver_lives_under_the_shipped_unit(daemon, tmp_path):
    """WatchdogSec=30 and ExecReload=kill -HUP: the noop driver pings the
    watchdog, survives SIGHUP, and exits 0 on SIGTERM."""
    from pxefilterd_harness.daemon import NotifySocket
    d = daemon(extra='[pxe_filter]\ndriver = noop\n')
    notify = NotifySocket(tmp_path / 'notify.sock')
    try:
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        d.log = open(d.logfile, 'wb')
        d.proc = subprocess.Popen(
            [sys.executable, '-m', 'pxefilterd.cmd.daemon',
             '--config-file', str(d.conf)],
            stdout=d.log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: notify.times('READY=1'), what='READY')
        wait_for(lambda: len(notify.times('WATCHDOG=1')) >= 2, timeout=15,
                 what='two watchdog pings')
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'SIGHUP: configuration reloaded' in d.output(),
                 what='SIGHUP handled')
        assert d.proc.poll() is None
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert 'exiting with status 0: received SIGTERM' in d.output()
        assert not d.dnsmasq_running()
        assert d.files() == {}
    finally:
        notify.close()


def test_a_flood_of_idle_metrics_connections_leaves_the_daemon_converging(
        daemon, fake):
    """Security review: each idle connection to the metrics port used to
    hold a thread and a descriptor; with the descriptors used up, the next
    decision change failed with EMFILE, which was fatal.  Here the daemon
    gets 256 descriptors and 400 idle loopback connections (closed by the
    test itself): it keeps running and still writes the next change."""
    import resource
    import socket
    c1 = '52:54:00:00:00:c1'
    node = fake.add_node()
    fake.add_port(node, c1)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    d = daemon(extra='[metrics]\nenabled = True\nlisten_address = '
                     '127.0.0.1\nlisten_port = %d\n' % port)
    d.log = open(d.logfile, 'wb')
    d.proc = subprocess.Popen(
        [sys.executable, '-m', 'pxefilterd.cmd.daemon',
         '--config-file', str(d.conf)],
        stdout=d.log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                              (256, 256)))
    wait_for(d.dnsmasq_running, what='dnsmasq start')
    clients = []
    try:
        for _ in range(400):
            try:
                clients.append(socket.create_connection(('127.0.0.1', port),
                                                        timeout=2))
            except OSError:
                break      # refused: the backlog is full, which is fine
        time.sleep(1.0)
        fake.set_node(node, provision_state='inspect wait')
        wait_for(lambda: d.files().get(c1) == c1 + '\n', timeout=15,
                 what='the change written during the flood')
        assert d.proc.poll() is None, d.output()[-2000:]
    finally:
        for c in clients:
            c.close()
    assert 'Too many open files' not in d.output()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0


def test_an_unobservable_dnsmasq_is_a_warning_at_start(daemon):
    """Nothing in these commands says where dnsmasq's pid is: the daemon
    says so at start-up, naming the option to set, instead of looking
    healthy while it cannot see a dnsmasq die."""
    d = daemon().start()
    wait_for(d.dnsmasq_running, what='dnsmasq start')
    wait_for(lambda: 'Ready:' in d.output(), what='ready')
    out = d.output()
    assert 'WARNING' in out and 'dnsmasq is not observed' in out, out
    assert 'set [dnsmasq_pxe_filter] dnsmasq_pid_file' in out
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
