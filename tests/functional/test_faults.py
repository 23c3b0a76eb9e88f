"""Fault injection on a real file system: ENOSPC, read-only, vanished.

Needs root (tmpfs mounts); skipped otherwise.
"""

import os
import signal
import subprocess
import time

import pytest

from tests.fake_ironic import FakeIronic
from tests.functional.test_daemon import Daemon
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root to mount a tmpfs')

VALID = ('%s\n', '%s,ignore\n')


def mount(path, options):
    subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs',
                    str(path)], check=True, timeout=10)


def remount(path, options):
    subprocess.run(['mount', '-o', 'remount,' + options, str(path)],
                   check=True, timeout=10)


@pytest.fixture
def tiny(tmp_path):
    """A 64 KiB tmpfs (16 pages: each small file takes one page)."""
    top = tmp_path / 'fs'
    top.mkdir()
    mount(top, 'size=64k,mode=0755')
    try:
        yield top
    finally:
        subprocess.run(['umount', '-l', str(top)], timeout=10, check=False)


@pytest.fixture
def fake():
    f = FakeIronic().start()
    f.node_ids = []
    for i in range(40):
        node = f.add_node()
        f.add_port(node, '52:54:00:00:00:%02x' % i)
        f.node_ids.append(node)
    yield f
    f.stop()


def check_files(hostsdir):
    for name in os.listdir(hostsdir):
        data = (hostsdir / name).read_text()
        if name == 'unknown_hosts_filter':
            assert data in ('*:*:*:*:*:*\n20-:\n',
                            '*:*:*:*:*:*,ignore\n20-:,ignore\n')
        else:
            assert data in (VALID[0] % name, VALID[1] % name), (name, data)


def test_enospc_no_partial_file_and_recovery(tiny, fake):
    d = Daemon(tiny, fake)
    try:
        d.start()
        wait_for(lambda: 'No space left on device' in d.output(),
                 what='ENOSPC logged')
        assert not d.dnsmasq_running()     # first sync never completed
        check_files(d.hostsdir)
        assert os.listdir(tiny / '.hostsdir.staging') == ['lock']
        remount(tiny, 'size=1m')
        wait_for(d.dnsmasq_running, timeout=40, what='recovery')
        assert len(os.listdir(d.hostsdir)) == 41
        check_files(d.hostsdir)
        # and again while running: fill the disk, change, free it
        fd = os.open(tiny / 'ballast', os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b'x' * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        fake.set_node(fake.node_ids[3], provision_state='inspect wait')
        wait_for(lambda: d.output().count('No space left') >= 2,
                 what='ENOSPC while running')
        check_files(d.hostsdir)
        os.unlink(tiny / 'ballast')
        wait_for(lambda: (d.hostsdir / '52:54:00:00:00:03').read_text() ==
                 '52:54:00:00:00:03\n', timeout=20, what='retried write')
        assert d.proc.poll() is None
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0
    finally:
        d.cleanup()


def test_read_only_hostsdir_fails_closed(tiny, fake):
    d = Daemon(tiny, fake)
    remount(tiny, 'size=1m')
    try:
        d.start()
        wait_for(d.dnsmasq_running, what='start')
        # The daemon keeps its lock file open for writing, so the tmpfs
        # itself cannot be remounted read-only: a read-only bind mount over
        # it has the same effect on every path the daemon opens.
        subprocess.run(['mount', '--bind', str(tiny), str(tiny)],
                       check=True, timeout=10)
        remount(tiny, 'bind,ro')
        fake.set_node(fake.node_ids[3], provision_state='inspect wait')
        assert d.proc.wait(20) == 1
        assert not d.dnsmasq_running()
        assert 'Read-only file system' in d.output()
        assert 'exiting with status 1: hostsdir failure' in d.output()
    finally:
        d.cleanup()
        subprocess.run(['umount', str(tiny)], timeout=10, check=False)


def test_vanished_hostsdir_fails_closed(tmp_path, fake):
    d = Daemon(tmp_path, fake)
    try:
        d.start()
        wait_for(d.dnsmasq_running, what='start')
        # one atomic step: a loop of unlinks would race with the healing
        os.rename(d.hostsdir, tmp_path / 'gone')
        started = time.monotonic()
        fake.set_node(fake.node_ids[3], provision_state='inspect wait')
        assert d.proc.wait(20) == 1
        assert time.monotonic() - started < 20
        assert not d.dnsmasq_running()
    finally:
        d.cleanup()
