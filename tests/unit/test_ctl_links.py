"""A root-run ``pxefilterd-ctl`` never writes, deletes or reads through
links that the daemon's user planted in the daemon's directories, and
never reads a path it did not build (issue 22, finding 1).

Files in ``tmp_path/root`` stand in for root's own files: each test plants a
link to them where pxefilterd-ctl works and checks they are untouched.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from pxefilterd import control
from pxefilterd import ironic
from pxefilterd.cmd import ctl
from pxefilterd.policy import Snapshot
from tests.fake_ironic import FakeIronic
from tests.unit import test_ctl
from tests.unit.test_ctl import FakeSource
from tests.unit.test_ctl import run

M1, M2 = '52:54:00:00:00:01', '52:54:00:00:00:02'
SECRET = b'root:only-root-may-read-this\n'


@pytest.fixture
def source(monkeypatch):
    fake = FakeSource(Snapshot(ports={M1: 'n1', M2: 'n2'}))
    monkeypatch.setattr(ironic.IronicClient, 'from_conf',
                        staticmethod(lambda conf: fake))
    return fake


@pytest.fixture
def rootdir(tmp_path):
    """Stands in for a directory only root may write, with a 0600 file."""
    path = tmp_path / 'root'
    path.mkdir(mode=0o700)
    secret = path / 'shadow'
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    (path / 'keep.tmp').write_bytes(b'root\'s temp file\n')
    return path


@pytest.fixture
def hdir(tmp_path):
    path = tmp_path / 'dhcp-hostsdir'
    path.mkdir()
    return path


def write_conf(tmp_path, hdir, extra=''):
    return test_ctl.write_conf(tmp_path, hdir, extra + (
        '[DEFAULT]\ncontrol_socket = %s\n' % (tmp_path / 'control.sock')))


def unchanged(rootdir):
    return (sorted(os.listdir(rootdir)) == ['keep.tmp', 'shadow']
            and (rootdir / 'shadow').read_bytes() == SECRET
            and (rootdir / 'shadow').stat().st_mode & 0o777 == 0o600)


def test_sync_never_writes_its_pid_through_a_planted_lock_link(
        tmp_path, hdir, rootdir, source, capsys):
    staging = tmp_path / '.dhcp-hostsdir.staging'
    staging.mkdir()
    os.symlink(rootdir / 'shadow', staging / 'lock')
    code, _ = run('--config-file', write_conf(tmp_path, hdir),
                  'sync', '--once')
    assert code == 1
    assert unchanged(rootdir)
    assert 'lock' in capsys.readouterr().err
    assert source.calls == []             # refused before asking ironic
    assert os.listdir(hdir) == []


def test_sync_never_deletes_through_a_planted_staging_link(
        tmp_path, hdir, rootdir, source, capsys):
    os.symlink(rootdir, tmp_path / '.dhcp-hostsdir.staging')
    code, _ = run('--config-file', write_conf(tmp_path, hdir),
                  'sync', '--once')
    assert code == 1
    assert unchanged(rootdir)
    assert 'symlink' in capsys.readouterr().err
    assert source.calls == []


def test_sync_refuses_a_hostsdir_that_is_a_link(tmp_path, rootdir, source,
                                                capsys):
    os.symlink(rootdir, tmp_path / 'dhcp-hostsdir')
    code, _ = run('--config-file',
                  write_conf(tmp_path, tmp_path / 'dhcp-hostsdir'),
                  'sync', '--once')
    assert code == 1
    assert unchanged(rootdir)
    assert 'symlink' in capsys.readouterr().err
    assert source.calls == []


def test_sync_never_reads_through_a_planted_base_file_link(tmp_path, hdir,
                                                      rootdir, source):
    base = tmp_path / 'base-hosts'
    os.symlink(rootdir / 'shadow', base)
    code, _ = run('--config-file', write_conf(
        tmp_path, hdir, '[dnsmasq_pxe_filter]\ndhcp_hostsfile = %s\n'
        % base), 'sync', '--once')
    assert code == 1
    assert unchanged(rootdir)


def test_status_never_opens_a_planted_lock_link(tmp_path, hdir, rootdir):
    # a FIFO: opening it to read would block (a device could do worse)
    staging = tmp_path / '.dhcp-hostsdir.staging'
    staging.mkdir()
    os.mkfifo(rootdir / 'fifo')
    os.symlink(rootdir / 'fifo', staging / 'lock')
    code, out = run('--config-file', write_conf(tmp_path, hdir), 'status',
                    '--format', 'json')
    assert code == 0, out
    assert json.loads(out)['lock'] is None


def test_status_and_explain_never_read_through_file_links(tmp_path, hdir,
                                                          rootdir):
    os.symlink(rootdir / 'shadow', hdir / M1)
    conf = write_conf(tmp_path, hdir)
    code, out = run('--config-file', conf, 'status', '--format', 'json')
    assert code == 0
    assert json.loads(out)['foreign'] == [M1]
    code, out = run('--config-file', conf, 'explain', M1, '--format', 'json')
    assert b'only-root' not in out.encode()
    assert unchanged(rootdir)


class LyingDaemon:
    """Answers every explain with a key that names a path outside the
    hostsdir."""

    def __init__(self, path, key):
        self.server = control.ControlServer(path, self.answer)
        self.key = key

    def answer(self, request):
        return {'ok': True, 'key': self.key, 'action': 'deny',
                'rule': 'not-inspected', 'text': 'lies', 'option': None,
                'ironic': {}, 'last_change': None, 'pid': 1}


def test_explain_reads_the_record_of_the_mac_it_was_given(tmp_path, hdir,
                                                          rootdir):
    (hdir / M1).write_bytes(b'52:54:00:00:00:01,ignore\n')
    daemon = LyingDaemon(str(tmp_path / 'control.sock'),
                         '../root/shadow')
    daemon.server.start()
    try:
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'explain', M1, '--format', 'json')
    finally:
        daemon.server.close()
    assert code == 0
    assert 'only-root' not in out
    result = json.loads(out)
    assert result['key'] == M1
    assert result['file'] == {'path': str(hdir / M1), 'exists': True,
                              'content': M1 + ',ignore', 'says': 'deny'}


# -- running as root: become the daemon's user ----------------------------

@pytest.fixture
def shared_tmp():
    """A directory every user may traverse (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix='pxefilterd-ctl-')
    os.chmod(path, 0o755)
    yield path
    subprocess.run(['rm', '-rf', '--', path], check=True)


NOBODY = 65534
REPO = str(pathlib.Path(__file__).resolve().parents[2])


def _traversable_by_others(path):
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _python_others_can_run(where):
    """A Python interpreter with pxefilterd and its dependencies that a
    user other than root can run: this one if it can, else a venv of the
    system python3 made in ``where`` from the committed pins.

    tox keeps its environments in a 0700 directory and pyenv's Python may
    live under /root: a pxefilterd-ctl that has become the daemon's user
    could not load the code it imports lazily from there (a daemon run
    as that user could not run from there either).
    """
    import keystoneauth1
    if all(_traversable_by_others(p) for p in (
            sys.base_prefix, os.path.dirname(keystoneauth1.__file__))):
        return sys.executable
    # uv: this environment's, else the development venv's (tools/setup.sh)
    uv = shutil.which('uv', path=os.pathsep.join((
        os.path.dirname(sys.executable), os.path.join(REPO, '.venv', 'bin'),
        os.environ.get('PATH', ''))))
    if uv is None or not os.path.exists('/usr/bin/python3'):
        pytest.skip('no Python that the daemon user can run (and no uv or '
                    '/usr/bin/python3 to make one)')
    venv = os.path.join(where, 'venv')
    subprocess.run(['/usr/bin/python3', '-m', 'venv', '--without-pip', venv],
                   check=True, timeout=60)
    python = os.path.join(venv, 'bin', 'python')
    res = subprocess.run(
        [uv, 'pip', 'install', '-q', '--python', python, '--no-deps',
         '-r', os.path.join(REPO, 'pins', 'guest.txt'),
         '--build-constraint', os.path.join(REPO, 'pins', 'dev.txt'),
         '-e', REPO], capture_output=True, text=True, timeout=300)
    if res.returncode:
        pytest.skip('cannot make a venv the daemon user can run: %s'
                    % res.stderr[-300:])
    return python


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root')
def test_a_root_run_becomes_the_owner_of_the_hostsdir(shared_tmp):
    state = os.path.join(shared_tmp, 'state')        # /var/lib/pxefilterd
    hdir = os.path.join(state, 'dhcp-hostsdir')
    os.makedirs(hdir)
    os.chown(state, NOBODY, NOBODY)
    os.chown(hdir, NOBODY, NOBODY)
    fake = FakeIronic().start()
    try:
        fake.add_port(fake.add_node(), M1)
        conf = os.path.join(shared_tmp, 'pxefilterd.conf')
        with open(conf, 'w') as f:
            f.write('[DEFAULT]\nroot_helper =\ncontrol_socket =\n'
                    '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
                    '[ironic]\nauth_type = none\nendpoint_override = %s\n'
                    'api_retries = 0\ntimeout = 5\n' % (hdir, fake.url))
        os.chmod(conf, 0o600)                  # root reads it, then drops
        res = subprocess.run(
            [_python_others_can_run(shared_tmp), '-c', 'import sys; from '
             'pxefilterd.cmd import ctl; sys.exit(ctl.main(sys.argv[1:]))',
             '--config-file', conf, 'sync', '--once'],
            capture_output=True, text=True, timeout=60)
    finally:
        fake.stop()
    assert res.returncode == 0, res.stderr
    staging = os.path.join(state, '.dhcp-hostsdir.staging')
    for path in (staging, os.path.join(staging, 'lock'),
                 os.path.join(hdir, M1),
                 os.path.join(hdir, 'unknown_hosts_filter')):
        assert os.stat(path).st_uid == NOBODY, path


def test_the_daemons_user_is_the_first_other_owner_on_the_way(tmp_path):
    deep = tmp_path / 'a' / 'b' / 'c'
    deep.mkdir(parents=True)
    os.chown(tmp_path / 'a', 0, 0)
    if os.geteuid() != 0:
        pytest.skip('needs root to chown')
    os.chown(tmp_path / 'a' / 'b', NOBODY, NOBODY)
    assert ctl.path_owner(str(deep)) == (NOBODY, NOBODY)
    assert ctl.path_owner(str(tmp_path / 'a')) == (0, 0)
    # a component the user swapped for a link to root's files: still theirs
    os.rename(tmp_path / 'a' / 'b' / 'c', tmp_path / 'c.old')
    os.symlink(tmp_path / 'c.old', tmp_path / 'a' / 'b' / 'c')
    assert ctl.path_owner(str(deep)) == (NOBODY, NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root')
def test_two_owners_are_refused(tmp_path, capsys):
    state = tmp_path / 'state'
    hdir = state / 'dhcp-hostsdir'
    hdir.mkdir(parents=True)
    os.chown(state, NOBODY, NOBODY)
    other = tmp_path / 'other'
    other.mkdir()
    os.chown(other, NOBODY - 1, NOBODY - 1)
    code, _ = run('--config-file', write_conf(
        tmp_path, hdir, '[dnsmasq_pxe_filter]\nstaging_dir = %s\n'
        % (other / 'staging')), 'status')
    assert code == 1
    err = capsys.readouterr().err
    assert 'owned by different users' in err
