"""The real pxefilterd-rootwrap with the shipped rootwrap.conf and filters.

Needs root (rootwrap runs programs as root).  The shipped rootwrap.conf is
used as it is, except for filters_path (this checkout's rootwrap.d).
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from pxefilterd import commands
from pxefilterd import dnsmasq as dnsmasq_mod
from tests.waiting import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
ROOTWRAP = pathlib.Path(sys.executable).parent / 'pxefilterd-rootwrap'
DNSMASQ = '/usr/sbin/dnsmasq'

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not ROOTWRAP.exists(),
    reason='needs root and pxefilterd-rootwrap installed')


def conf(tmp_path, exec_dirs=None, filters=None):
    text = (REPO / 'etc/pxefilterd/rootwrap.conf').read_text()
    text = text.replace('filters_path=/etc/pxefilterd/rootwrap.d',
                        'filters_path=%s' % (filters or REPO / 'rootwrap.d'))
    if exec_dirs is not None:
        text = text.replace('exec_dirs=/usr/lib/pxefilterd/rootwrap-no-bin',
                            'exec_dirs=%s' % exec_dirs)
    path = tmp_path / 'rootwrap.conf'
    path.write_text(text)
    return path


@pytest.fixture
def privsep_helper(tmp_path):
    """A "privsep-helper" that proves it ran by writing a file."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    marker = tmp_path / 'ran-as-root'
    exe = bin_dir / 'privsep-helper'
    exe.write_text('#!/bin/sh\necho "$@" > %s\n' % marker)
    exe.chmod(0o755)
    return bin_dir, marker


def rootwrap(config, argv, path=None):
    env = dict(os.environ)
    if path:
        env['PATH'] = '%s:%s' % (path, env.get('PATH', ''))
    return subprocess.run([str(ROOTWRAP), str(config)] + argv, env=env,
                          capture_output=True, text=True, timeout=30)


def test_privsep_helper_on_the_path_is_refused(tmp_path, privsep_helper):
    bin_dir, marker = privsep_helper
    out = rootwrap(conf(tmp_path), ['privsep-helper', '--any', 'thing'],
                   path=bin_dir)
    assert out.returncode != 0
    assert 'Unauthorized command' in out.stderr + out.stdout \
        or 'Executable not found' in out.stderr + out.stdout
    assert not marker.exists()
    # the danger: the same filters with a directory holding one run it
    out = rootwrap(conf(tmp_path, exec_dirs=bin_dir),
                   ['privsep-helper', '--any', 'thing'])
    assert out.returncode == 0, out.stderr
    assert marker.read_text().strip() == '--any thing'


@pytest.fixture
def real_dnsmasq(tmp_path):
    """A real dnsmasq that serves nothing (no DNS, no DHCP), with a pid
    file; killed by PID afterwards if still there."""
    if not os.path.exists(DNSMASQ):
        pytest.skip('dnsmasq is not installed')
    pid_file = tmp_path / 'dnsmasq.pid'
    proc = subprocess.Popen(
        [DNSMASQ, '--keep-in-foreground', '--port=0', '--conf-file=/dev/null',
         '--pid-file=%s' % pid_file, '--user=root'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: dnsmasq_mod.observe(str(pid_file)).state
                 == dnsmasq_mod.RUNNING, what='dnsmasq up')
        yield proc, pid_file
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def kill_filters_enabled(tmp_path):
    """A copy of the shipped filters with the (commented-out) kill filters
    enabled, as their comment says."""
    directory = tmp_path / 'rootwrap.d'
    directory.mkdir(exist_ok=True)
    text = (REPO / 'rootwrap.d/pxefilterd.filters').read_text()
    (directory / 'pxefilterd.filters').write_text(
        text.replace('#kill_dnsmasq', 'kill_dnsmasq'))
    return directory


def test_the_shipped_filters_let_no_dnsmasq_be_signalled(tmp_path,
                                                          real_dnsmasq):
    proc, pid_file = real_dnsmasq
    for argv in (['kill', '-HUP', str(proc.pid)], ['kill', str(proc.pid)]):
        out = rootwrap(conf(tmp_path), argv)
        assert out.returncode != 0
        assert 'Unauthorized command' in out.stderr + out.stdout
    assert proc.poll() is None


def test_the_seeds_kill_commands_run_through_the_enabled_kill_filters(
        tmp_path, real_dnsmasq):
    proc, pid_file = real_dnsmasq
    helper = [str(ROOTWRAP),
              str(conf(tmp_path, filters=kill_filters_enabled(tmp_path)))]
    reload = commands.Command.from_line(
        'reload', 'kill -HUP $(cat %s)' % pid_file, helper, 30)
    reload.run()
    assert proc.poll() is None        # SIGHUP: dnsmasq re-reads, lives on
    stop = commands.Command.from_line('stop', 'kill $(cat %s)' % pid_file,
                                      helper, 30)
    stop.run()
    assert proc.wait(10) is not None


def test_kill_of_anything_but_dnsmasq_is_refused(tmp_path):
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        out = rootwrap(conf(tmp_path, filters=kill_filters_enabled(tmp_path)),
                       ['kill', str(sleeper.pid)])
        assert out.returncode != 0
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_shipped_systemctl_filters_name_a_real_program():
    if not shutil.which('systemctl'):
        pytest.skip('no systemctl')
    assert os.access('/usr/bin/systemctl', os.X_OK)
