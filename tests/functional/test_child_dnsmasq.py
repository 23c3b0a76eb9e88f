"""The all-in-one mode with a real dnsmasq: ``dnsmasq_child_command``.

The real ``pxefilterd`` process against a fake ironic, its dnsmasq a child
serving DHCP in a network namespace (root only).  dnsmasq starts only after
the first sync, answers a real DHCP probe, and never outlives pxefilterd:
not after SIGTERM (the exit path stops it), not after SIGKILL (no exit
path: the guard stops it; the kernel's parent-death signal no longer
applies once dnsmasq has dropped root).
"""

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.fake_ironic import FakeIronic
from tests.waiting import wait_for

pxefilterd_harness = pytest.importorskip('pxefilterd_harness')
from pxefilterd_harness import dhcp_probe, preflight  # noqa: E402
from pxefilterd_harness.dnsmasq import DnsmasqInstance  # noqa: E402
from pxefilterd_harness.netns import DhcpNetwork  # noqa: E402

A1 = '52:54:00:00:00:a1'
UNKNOWN = '52:54:00:ee:ee:01'


@pytest.fixture
def net():
    problem = preflight.dhcp_problem(need_dhclient=False)
    if problem:
        pytest.skip(problem)
    network = DhcpNetwork(prefix='pxfc')
    yield network
    network.close()


@pytest.fixture
def fake():
    f = FakeIronic().start()
    node = f.add_node()
    f.add_port(node, A1)
    f.set_node(node, provision_state='inspect wait')   # A1 may boot
    yield f
    gate, f.listing_gate = f.listing_gate, None
    if gate is not None:
        gate.set()
    f.stop()


class ChildDaemon:
    """pxefilterd whose dnsmasq is its child, in ``net``'s server netns."""

    def __init__(self, tmp_path, net, fake):
        os.chmod(tmp_path, 0o755)
        self.hostsdir = tmp_path / 'hostsdir'
        self.hostsdir.mkdir(mode=0o755)
        self.dnsmasq = DnsmasqInstance(net, self.hostsdir, tmp_path / 'dm')
        argv = net.server_argv([self.dnsmasq.binary, '--conf-file=%s'
                                % self.dnsmasq.conf_path])
        self.log_path = tmp_path / 'pxefilterd.log'
        self.conf = tmp_path / 'pxefilterd.conf'
        self.conf.write_text(
            '[DEFAULT]\nroot_helper =\ncontrol_socket = %s\n'
            '[pxe_filter]\ninspection_poll_interval = 0.2\n'
            '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
            'dnsmasq_child_command = %s\ncommand_timeout = 5\n'
            '[ironic]\nauth_type = none\nendpoint_override = %s\n'
            'timeout = 2\napi_retries = 0\n'
            % (tmp_path / 'control.sock', self.hostsdir, shlex.join(argv),
               fake.url))
        self.proc = None

    def start(self):
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'pxefilterd.cmd.daemon',
             '--config-file', str(self.conf)],
            stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def log(self):
        return self.log_path.read_text(errors='replace')

    def ctl(self, *args):
        res = subprocess.run(
            [sys.executable, '-m', 'pxefilterd.cmd.ctl', '--config-file',
             str(self.conf), *args], capture_output=True, text=True,
            timeout=30)
        return res.returncode, res.stdout + res.stderr

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.dnsmasq.stop()
        self._log.close()


@pytest.fixture
def daemon(net, fake):
    # (not tmp_path: dnsmasq, as nobody, must reach the hostsdir)
    path = tempfile.mkdtemp(prefix='pxf-child-')
    try:
        d = ChildDaemon(pathlib.Path(path), net, fake)
        yield d
        d.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _offered(net, macs):
    got = dhcp_probe.probe(net, list(macs), timeout=1.0, retries=2)
    return {m for m in macs if got[m].offer}


def _parent(pid):
    with open('/proc/%d/stat' % pid, 'rb') as f:
        data = f.read()
    return int(data[data.rindex(b')') + 2:].split()[1])


def test_child_dnsmasq_serves_after_the_first_sync_and_dies_with_sigkill(
        daemon, net, fake):
    fake.listing_gate = threading.Event()
    daemon.start()
    time.sleep(1.0)
    # ironic has not answered: nothing serves
    assert daemon.dnsmasq.pid() is None
    assert _offered(net, [UNKNOWN]) == set()
    fake.listing_gate.set()
    wait_for(daemon.dnsmasq.pid, 30, 'dnsmasq running')
    pid = daemon.dnsmasq.pid()
    assert _parent(pid) == daemon.proc.pid       # its child, not a daemon
    assert _offered(net, [A1, UNKNOWN]) == {A1, UNKNOWN}
    code, out = daemon.ctl('health')
    assert code == 0, out
    assert 'a child of pxefilterd' in out
    daemon.proc.kill()
    killed = time.monotonic()
    assert DnsmasqInstance.wait_gone(pid, 2.0), daemon.log()[-2000:]
    print('dnsmasq gone %.3f s after SIGKILL of pxefilterd'
          % (time.monotonic() - killed))
    assert _offered(net, [A1, UNKNOWN]) == set()
    code, out = daemon.ctl('health')
    assert code == 1 and 'does not answer' in out


def test_child_dnsmasq_restarted_then_stopped_at_exit(daemon, net):
    daemon.start()
    wait_for(daemon.dnsmasq.pid, 30, 'dnsmasq running')
    first = daemon.dnsmasq.pid()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.dnsmasq.pid() not in (None, first), 10,
             'dnsmasq started again')
    wait_for(lambda: _offered(net, [UNKNOWN]) == {UNKNOWN}, 10, 'offers')
    second = daemon.dnsmasq.pid()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    assert DnsmasqInstance.wait_gone(second, 1.0)
    log = daemon.log()
    assert 'dnsmasq runs as a child of pxefilterd' in log
    assert 'dnsmasq (pid %d) stopped: exited with status 0' % second in log \
        or 'dnsmasq (pid %d) stopped: was killed by SIGTERM' % second in log
