"""pxefilterd-ctl: status, sync --once [--dry-run], check-config."""

import io
import json
import os
import pathlib
import stat

import pytest

from pxefilterd.cmd import ctl
from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd.policy import Snapshot
from tests.fake_ironic import FakeIronic

REPO = pathlib.Path(__file__).resolve().parents[2]
M1, M2, M3, M4 = ('52:54:00:00:00:01', '52:54:00:00:00:02',
                  '52:54:00:00:00:03', '52:54:00:00:00:04')


@pytest.fixture
def hdir(tmp_path):
    path = tmp_path / 'dhcp-hostsdir'
    path.mkdir()
    (path / M1).write_bytes(b'52:54:00:00:00:01\n')            # allow
    (path / M2).write_bytes(b'52:54:00:00:00:02,ignore\n')     # deny
    (path / M3).write_bytes(b'52:54:00:00:00:03,IGNORE\n')     # invalid
    (path / 'unknown_hosts_filter').write_bytes(
        b'*:*:*:*:*:*,ignore\n20-:,ignore\n')
    (path / 'README').write_text('not ours\n')                 # foreign
    return path


def write_conf(tmp_path, hdir, extra=''):
    conf = tmp_path / 'pxefilterd.conf'
    conf.write_text(
        '[DEFAULT]\nroot_helper =\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        'dnsmasq_start_command = true\ndnsmasq_stop_command = true\n'
        'dnsmasq_reload_command = true\n'
        '[ironic]\nauth_type = none\nendpoint_override = http://127.0.0.1:9\n'
        '%s' % (hdir, extra))
    return str(conf)


def run(*argv):
    out = io.StringIO()
    code = ctl.main(list(argv), out=out)
    return code, out.getvalue()


def listing(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.is_file()}


class FakeSource:
    def __init__(self, snapshot=None, error=None):
        self._snapshot = snapshot
        self._error = error
        self.calls = []

    def snapshot(self):
        self.calls.append('snapshot')
        if self._error:
            raise self._error
        return self._snapshot

    def inspection_nodes(self):
        self.calls.append('inspection_nodes')
        if self._error:
            raise self._error
        return self._snapshot.nodes


@pytest.fixture
def fake_source(monkeypatch):
    holder = {'source': FakeSource(Snapshot(
        ports={M1: 'n1', M2: 'n2', M4: 'n1'})),
        'confs': []}

    def from_conf(conf):
        holder['confs'].append(conf)
        return holder['source']

    monkeypatch.setattr(ironic.IronicClient, 'from_conf',
                        staticmethod(from_conf))
    return holder


# -- status -------------------------------------------------------------------

def test_status_json(tmp_path, hdir):
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'status', '--format', 'json')
    assert code == 0
    st = json.loads(out)
    assert st == {
        'hostsdir': str(hdir), 'allowed': [M1], 'denied_count': 1,
        'unknown': 'deny', 'invalid': [M3], 'foreign': ['README'],
        'hostsfile': None, 'lock': None, 'driver': 'dnsmasq',
        'dnsmasq': {'state': 'not observed', 'pid': None, 'detail':
                    'dnsmasq is not observed: none of the dnsmasq commands '
                    'names a pid file; set [dnsmasq_pxe_filter] '
                    'dnsmasq_pid_file'},
        'daemon': None}


def test_status_observes_dnsmasq_through_its_pid_file(tmp_path, hdir):
    pid_file = tmp_path / 'dnsmasq.pid'
    pid_file.write_text('999999999\n')
    conf = write_conf(tmp_path, hdir)
    conf_text = open(conf).read().replace(
        '[ironic]', '[dnsmasq_pxe_filter]\ndnsmasq_pid_file = %s\n[ironic]'
        % pid_file, 1)
    open(conf, 'w').write(conf_text)
    code, out = run('--config-file', conf, 'status')
    assert code == 0
    assert 'dnsmasq: gone (pid 999999999 (from %s) does not exist)' \
        % pid_file in out


def test_status_text(tmp_path, hdir):
    code, out = run('--config-file', write_conf(tmp_path, hdir), 'status')
    assert code == 0
    assert 'daemon: none (the hostsdir lock is free)' in out
    assert 'unknown MACs: deny' in out
    assert 'denied: 1' in out
    assert 'allowed: 1\n  %s\n' % M1 in out
    assert 'invalid files (rewritten at the next sync): %s' % M3 in out
    assert "foreign entries (not pxefilterd's): README" in out


def test_status_is_read_only(tmp_path, hdir):
    before = listing(hdir)
    run('--config-file', write_conf(tmp_path, hdir), 'status')
    assert listing(hdir) == before
    # no staging directory (nor lock file) created
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'dhcp-hostsdir', 'pxefilterd.conf']


def test_status_reports_the_lock_holder(tmp_path, hdir):
    store = hostsdir.HostsDir(str(hdir))
    store.lock()
    try:
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'status', '--format', 'json')
        assert json.loads(out)['lock'] == {'pid': os.getpid(),
                                           'alive': True}
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'status')
        assert 'daemon: lock held by pid %d' % os.getpid() in out
    finally:
        store.unlock()
    code, out = run('--config-file', write_conf(tmp_path, hdir), 'status',
                    '--format', 'json')
    assert json.loads(out)['lock'] is None


def test_status_lock_held_by_a_guard_of_a_dead_daemon(tmp_path, hdir):
    store = hostsdir.HostsDir(str(hdir))
    store.lock()
    try:
        # what the lock file says after the daemon died, its guard alive
        os.pwrite(store.lock_fd, b'999999999\n', 0)
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'status')
        assert 'the guard of pid 999999999' in out
    finally:
        store.unlock()


def test_status_missing_wildcard_and_missing_hostsdir(tmp_path, hdir):
    (hdir / 'unknown_hosts_filter').unlink()
    code, out = run('--config-file', write_conf(tmp_path, hdir), 'status')
    assert 'unknown MACs: missing' in out
    code, out = run('--config-file',
                    write_conf(tmp_path, tmp_path / 'nope'), 'status')
    assert code == 1


def _with_base(tmp_path, hdir, lines):
    base = tmp_path / 'base-hosts'
    base.write_bytes(lines)
    return write_conf(tmp_path, hdir, '[dnsmasq_pxe_filter]\n'
                      'dhcp_hostsfile = %s\n' % base)


def test_status_with_a_base_hosts_file(tmp_path, hdir):
    # M4 allowed and M1 denied in the base file; M1's own file (allow)
    # overrides its line, as in dnsmasq.
    conf = _with_base(tmp_path, hdir, b'52:54:00:00:00:01,ignore\n'
                      b'52:54:00:00:00:04\n52:54:00:00:00:05,IGNORE\n')
    code, out = run('--config-file', conf, 'status', '--format', 'json')
    st = json.loads(out)
    assert st['allowed'] == [M1, M4]
    assert st['denied_count'] == 1
    assert st['hostsfile'] == {'path': str(tmp_path / 'base-hosts'),
                               'entries': 2, 'invalid_lines': 1}
    code, out = run('--config-file', conf, 'status')
    assert ('base hosts file: %s: 2 entries, 1 invalid line(s)'
            % (tmp_path / 'base-hosts')) in out


# -- sync ---------------------------------------------------------------------

def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, hdir,
                                                    fake_source):
    before = listing(hdir)
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'sync', '--once', '--dry-run')
    assert code == 0, out
    # nothing inspected: M1 allow -> deny, M3 invalid -> deny (it left
    # ironic: unknown state, deny), M4 new -> deny; M2 and the wildcard
    # already deny.
    assert out.splitlines() == [
        '%s: allow \u2192 deny' % M1,
        '%s: invalid \u2192 deny' % M3,
        '%s: absent \u2192 deny' % M4,
        'dry run: 3 file(s) would be written, nothing was written']
    assert listing(hdir) == before
    assert not (tmp_path / '.dhcp-hostsdir.staging').exists()


def test_dry_run_needs_no_lock(tmp_path, hdir, fake_source):
    store = hostsdir.HostsDir(str(hdir))
    store.lock()
    try:
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'sync', '--once', '--dry-run')
    finally:
        store.unlock()
    assert code == 0


def test_dry_run_ironic_failure(tmp_path, hdir, fake_source, capsys):
    fake_source['source'] = FakeSource(error=ironic.ApiError('HTTP 503'))
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'sync', '--once', '--dry-run')
    assert code == 1
    assert 'HTTP 503' in capsys.readouterr().err


def test_sync_once_applies_with_the_lock(tmp_path, hdir, fake_source):
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'sync', '--once')
    assert code == 0, out
    assert 'wrote 3 file(s): 0 allowed, 4 denied, unknown MACs deny' in out
    files = listing(hdir)
    assert files[M1] == b'52:54:00:00:00:01,ignore\n'
    assert files[M3] == b'52:54:00:00:00:03,ignore\n'
    assert files[M4] == b'52:54:00:00:00:04,ignore\n'
    assert files['README'] == b'not ours\n'
    # and a second run changes nothing
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'sync', '--once')
    assert 'wrote 0 file(s)' in out
    for name in (M1, M2, M3, M4):
        mode = stat.S_IMODE(os.stat(hdir / name).st_mode)
        assert mode == 0o644


def test_sync_once_writes_paced_like_the_daemon(tmp_path, hdir):
    # dnsmasq may be reading: max_burst files at once, then burst_rate/s
    conf = ctl.new_conf()
    ctl.parse(conf, ['--config-file', write_conf(
        tmp_path, hdir, '[dnsmasq_pxe_filter]\nmax_burst = 2\n'
        'burst_rate = 1\n'), 'sync', '--once'])
    store = hostsdir.HostsDir(str(hdir))
    store.check()
    store.load()
    desired, changes = ctl.plan(Snapshot(ports={M1: 'n1', M2: 'n2',
                                                M4: 'n1'}),
                                ctl._options(conf), store.current())
    assert len(changes) == 3
    now = [1000.0]
    waits = []

    def sleep(seconds):
        waits.append((seconds, store.files_written))
        now[0] += seconds

    written = ctl._converge(conf, store, desired, set(), clock=lambda: now[0],
                            sleep=sleep)
    assert written == 3
    assert waits and waits[0][1] == 2          # the burst, then a wait
    assert sum(w for w, _ in waits) >= 1.0     # one file at 1/s
    assert dict(store.current()) == dict(desired.macs,
                                         **{'*:*:*:*:*:*': desired.unknown})


def test_sync_once_with_a_base_file_writes_only_real_changes(
        tmp_path, hdir, fake_source):
    # M4 is already denied by the base file: no file for it
    conf = _with_base(tmp_path, hdir, b'52:54:00:00:00:04,ignore\n')
    code, out = run('--config-file', conf, 'sync', '--once', '--dry-run')
    assert '%s:' % M4 not in out
    code, out = run('--config-file', conf, 'sync', '--once')
    assert code == 0, out
    assert 'wrote 2 file(s)' in out
    assert M4 not in listing(hdir)
    assert (tmp_path / 'base-hosts').read_bytes() == (
        b'52:54:00:00:00:04,ignore\n')


def test_sync_once_refuses_while_a_daemon_holds_the_lock(
        tmp_path, hdir, fake_source, capsys):
    before = listing(hdir)
    store = hostsdir.HostsDir(str(hdir))
    store.lock()
    try:
        code, out = run('--config-file', write_conf(tmp_path, hdir),
                        'sync', '--once')
    finally:
        store.unlock()
    assert code == 1
    err = capsys.readouterr().err
    assert 'pid %d holds the lock' % os.getpid() in err
    assert 'Stop it first, or use --dry-run' in err
    assert listing(hdir) == before
    assert fake_source['source'].calls == []


def test_sync_without_once_is_a_usage_error(tmp_path, hdir):
    with pytest.raises(SystemExit) as exc:
        run('--config-file', write_conf(tmp_path, hdir), 'sync')
    assert exc.value.code == 2


def test_sync_refuses_contradictory_policy(tmp_path, hdir, fake_source,
                                           capsys):
    conf = write_conf(tmp_path, hdir, '[pxe_filter]\nauto_discovery = true\n'
                      'deny_unknown_macs = true\n')
    code, _ = run('--config-file', conf, 'sync', '--once', '--dry-run')
    assert code == 78
    assert 'cannot both be True' in capsys.readouterr().err


# -- check-config -------------------------------------------------------------

def test_check_config_good(tmp_path, hdir, fake_source):
    hdir.chmod(0o755)
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'check-config')
    assert code == 0, out
    assert out.endswith('configuration OK\n')
    assert fake_source['source'].calls == ['inspection_nodes']
    # a short timeout and no retries for the ironic probe
    conf = fake_source['confs'][0]
    assert conf.ironic.timeout <= ctl.CHECK_TIMEOUT
    assert conf.ironic.api_retries == 0


def test_check_config_bad_value_is_78(tmp_path, hdir, fake_source):
    conf = write_conf(tmp_path, hdir, '[pxe_filter]\nsync_period = soon\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 78
    assert out.startswith('config: [pxe_filter] sync_period: invalid value')


def test_check_config_bad_combination_is_78(tmp_path, hdir, fake_source):
    conf = write_conf(tmp_path, hdir, '[pxe_filter]\nauto_discovery = true\n'
                      'deny_unknown_macs = true\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 78
    assert 'cannot be combined' in out


def test_check_config_missing_file_is_78(tmp_path):
    code, out = run('--config-file', str(tmp_path / 'nope.conf'),
                    'check-config')
    assert code == 78
    assert 'configuration file not found' in out


def test_check_config_missing_hostsdir_is_78(tmp_path, fake_source):
    code, out = run('--config-file', write_conf(tmp_path, tmp_path / 'nope'),
                    'check-config')
    assert code == 78
    assert 'directory does not exist' in out


def test_check_config_unresolvable_command_is_1(tmp_path, hdir, fake_source):
    conf = write_conf(tmp_path, hdir, '[dnsmasq_pxe_filter]\n'
                      'dnsmasq_start_command = no-such-binary-pxf --x\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 1
    assert ('environment: no-such-binary-pxf: executable not found in PATH'
            in out)


def test_check_config_ironic_unreachable_is_1(tmp_path, hdir, fake_source):
    fake_source['source'] = FakeSource(
        error=ironic.ApiError('GET /nodes failed: connection refused'))
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'check-config')
    assert code == 1
    assert ('environment: ironic: not reachable: GET /nodes failed: '
            'connection refused' in out)


def test_check_config_bad_keystone_options_is_78(tmp_path, hdir):
    conf = write_conf(tmp_path, hdir, '[ironic]\nauth_type = password\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 78
    assert 'config: [ironic] authentication options:' in out


def test_check_config_warns_when_dnsmasq_cannot_read(tmp_path, hdir,
                                                     fake_source):
    hdir.chmod(0o750)
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'check-config')
    assert code == 0
    assert ('warning: %s is not readable by other users' % hdir) in out


def _rootwrap_env(tmp_path, monkeypatch):
    """A rootwrap.conf using the shipped filters, fake binaries in PATH."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for name in ('sudo', 'pxefilterd-rootwrap', 'systemctl'):
        exe = bindir / name
        exe.write_text('#!/bin/sh\nexit 0\n')
        exe.chmod(0o755)
    monkeypatch.setenv('PATH', str(bindir))
    rw = tmp_path / 'rootwrap.conf'
    rw.write_text('[DEFAULT]\nfilters_path = %s\nexec_dirs = %s\n'
                  % (REPO / 'rootwrap.d', bindir))
    return rw


def test_check_config_commands_allowed_by_the_shipped_filters(
        tmp_path, hdir, fake_source, monkeypatch):
    hdir.chmod(0o755)
    rw = _rootwrap_env(tmp_path, monkeypatch)
    conf = tmp_path / 'rw.conf'
    conf.write_text(
        '[DEFAULT]\nrootwrap_config = %s\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        '[ironic]\nauth_type = none\nendpoint_override = http://127.0.0.1:9\n'
        % (rw, hdir))
    example = REPO / 'etc' / 'pxefilterd' / 'pxefilterd.conf.example'
    # the example's commands, this test's paths
    code, out = run('--config-file', str(example), '--config-file',
                    str(conf), 'check-config')
    assert code == 0, out


def test_check_config_command_refused_by_the_filters_is_1(
        tmp_path, hdir, fake_source, monkeypatch):
    hdir.chmod(0o755)
    rw = _rootwrap_env(tmp_path, monkeypatch)
    conf = tmp_path / 'rw.conf'
    conf.write_text(
        '[DEFAULT]\nrootwrap_config = %s\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        'dnsmasq_start_command = systemctl start pxefilterd-dnsmasq.service\n'
        'dnsmasq_stop_command = systemctl stop pxefilterd-dnsmasq.service\n'
        '[ironic]\nauth_type = none\nendpoint_override = http://127.0.0.1:9\n'
        % (rw, hdir))
    code, out = run('--config-file', str(conf), 'check-config')
    assert code == 1
    # (pytest's tmp_path is 0700: ignore the warnings about dnsmasq)
    assert [line for line in out.splitlines()
            if not line.startswith(('warning: ', 'info: '))] == [
        'environment: [dnsmasq_pxe_filter] dnsmasq_start_command: '
        '"systemctl start pxefilterd-dnsmasq.service" is not allowed by any '
        'filter in %s' % (REPO / 'rootwrap.d')]


# -- against the fake ironic HTTP API, through the real IronicClient ---------

@pytest.fixture
def ironic_url():
    fake = FakeIronic().start()
    n1 = fake.add_node('inspect wait')
    n2 = fake.add_node()
    fake.add_port(n1, M1.upper())
    fake.add_port(n2, M2)
    yield fake.url
    fake.stop()


def test_real_source_dry_run_and_check_config(tmp_path, hdir, ironic_url):
    hdir.chmod(0o755)
    conf = write_conf(tmp_path, hdir, '[ironic]\nendpoint_override = %s\n'
                      % ironic_url)
    code, out = run('--config-file', conf, 'check-config')
    assert code == 0, out
    code, out = run('--config-file', conf, 'sync', '--once', '--dry-run')
    assert code == 0, out
    # n1 inspected: M1 stays allowed; unknown MACs allowed while inspecting;
    # M3 left ironic: unknown state.
    assert out.splitlines() == [
        '*:*:*:*:*:*: deny \u2192 allow',
        '%s: invalid \u2192 allow' % M3,
        'dry run: 2 file(s) would be written, nothing was written']


def test_check_config_real_source_unreachable(tmp_path, hdir):
    hdir.chmod(0o755)
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'check-config')
    assert code == 1
    assert 'environment: ironic: not reachable' in out


@pytest.mark.parametrize('euid', [1000, 0])
def test_check_config_shows_each_command_as_it_will_run(tmp_path, hdir,
                                                        monkeypatch, euid):
    """The shell words are expanded as the daemon will (by /bin/sh, as the
    user running it), but never as root: the daemon never runs them as
    root either."""
    monkeypatch.setattr(os, 'geteuid', lambda: euid)
    hdir.chmod(0o755)
    pid_file = tmp_path / 'dnsmasq.pid'
    pid_file.write_text('4242\n')
    conf = write_conf(tmp_path, hdir)
    text = open(conf).read().replace(
        'dnsmasq_stop_command = true\n',
        'dnsmasq_stop_command = kill $(cat %s)\n' % pid_file)
    open(conf, 'w').write(text)
    code, out = run('--config-file', conf, 'check-config')
    shown = 'kill 4242' if euid else 'kill $(cat %s)' % pid_file
    assert ('info: [dnsmasq_pxe_filter] dnsmasq_stop_command runs as: %s '
            "(the words expanded by /bin/sh as the daemon's user"
            % shown in out), out
    assert ('has shell expansions, not run here' in out) is (euid == 0)
    assert 'info: [dnsmasq_pxe_filter] dnsmasq_start_command runs as: ' \
        'true\n' in out


def test_check_config_refuses_shell_operators(tmp_path, hdir):
    conf = write_conf(tmp_path, hdir)
    text = open(conf).read().replace(
        'dnsmasq_stop_command = true\n',
        'dnsmasq_stop_command = kill $(cat /run/x.pid); reboot\n')
    open(conf, 'w').write(text)
    code, out = run('--config-file', conf, 'check-config')
    assert code == 78
    assert ("config: [dnsmasq_pxe_filter] dnsmasq_stop_command = kill "
            "$(cat /run/x.pid); reboot: cannot be parsed: shell operator "
            "';' outside an expansion" in out)


def test_check_config_names_the_files_and_unknown_options(tmp_path, hdir,
                                                          fake_source):
    conf = write_conf(tmp_path, hdir, '[pxe_filter]\ndeny_unkown_macs = 1\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 0, out
    assert 'info: configuration files read: %s\n' % conf in out
    assert ('warning: %s: [pxe_filter] deny_unkown_macs is not a pxefilterd '
            'option and is ignored (did you mean deny_unknown_macs?)'
            % conf) in out


def test_check_config_takes_ironics_filter_sections_as_they_are(
        tmp_path, hdir, fake_source):
    """[pxe_filter] and [auto_discovery] copied from an ironic.conf: the
    configuration is OK, and each ironic name is an info line, not a
    warning."""
    conf = write_conf(tmp_path, 'unused',
                      '[pxe_filter]\ndhcp_hostsdir = %s\nsync_period = 45\n'
                      'supported_inspect_interfaces = agent\n'
                      '[auto_discovery]\nenabled = false\ndriver = ipmi\n'
                      % hdir)
    # only ironic's name for the hostsdir
    text = open(conf).read().replace('dhcp_hostsdir = unused\n', '')
    open(conf, 'w').write(text)
    code, out = run('--config-file', conf, 'check-config')
    assert code == 0, out
    assert out.endswith('configuration OK\n')
    assert ("info: %s: [pxe_filter] dhcp_hostsdir is ironic's name for "
            '[dnsmasq_pxe_filter] dhcp_hostsdir and is read as it\n'
            % conf) in out
    assert ("info: %s: [auto_discovery] driver is ironic's" % conf) in out
    assert 'warning: %s' % conf not in out


def test_check_config_says_when_no_file_was_read(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    if any(os.path.exists(p) for p in ('/etc/pxefilterd/pxefilterd.conf',
                                       '/etc/pxefilterd.conf')):
        pytest.skip('this machine has a pxefilterd configuration in /etc')
    code, out = run('check-config')
    assert 'warning: no configuration file was read' in out
    assert 'info: configuration files read' not in out


def test_check_config_names_exactly_the_files_it_reads(tmp_path, hdir,
                                                        fake_source,
                                                        monkeypatch):
    """A configuration planted in the home directory is neither read nor
    hidden: check-config lists exactly the files that configure it."""
    home = tmp_path / 'home'
    planted = home / '.pxefilterd' / 'pxefilterd.conf.d'
    planted.mkdir(parents=True)
    (planted / 'evil.conf').write_text('[pxe_filter]\nsync_period = soon\n')
    monkeypatch.setenv('HOME', str(home))
    conf = write_conf(tmp_path, hdir)
    code, out = run('--config-file', conf, 'check-config')
    assert 'info: configuration files read: %s\n' % conf in out
    assert 'evil.conf' not in out
    assert code == 0, out


# -- check-config: is dnsmasq observed, will it take its start command ----

def test_check_config_catches_the_seeds_conf_file_form(tmp_path, hdir,
                                                       fake_source):
    """The specification prints "dnsmasq --conf-file FILE": dnsmasq 2.90
    takes --conf-file's value only as --conf-file=FILE and exits with
    "junk found in command line" at the first start."""
    hdir.chmod(0o755)
    conf = write_conf(tmp_path, hdir, '[dnsmasq_pxe_filter]\n'
                      'dnsmasq_start_command = true dnsmasq --conf-file '
                      '/etc/ironic-inspector/dnsmasq.conf\n')
    code, out = run('--config-file', conf, 'check-config')
    assert code == 78, out
    assert ('config: [dnsmasq_pxe_filter] dnsmasq_start_command: dnsmasq '
            'takes "--conf-file /etc/ironic-inspector/dnsmasq.conf"' in out)
    assert '--conf-file=/etc/ironic-inspector/dnsmasq.conf' in out


def test_check_config_says_when_dnsmasq_is_not_observed(tmp_path, hdir,
                                                        fake_source):
    hdir.chmod(0o755)
    code, out = run('--config-file', write_conf(tmp_path, hdir),
                    'check-config')
    assert code == 0, out
    assert ('warning: dnsmasq is not observed: none of the dnsmasq commands '
            'names a pid file; set [dnsmasq_pxe_filter] dnsmasq_pid_file'
            in out)


def test_check_config_names_the_pid_file_the_commands_name(tmp_path, hdir,
                                                           fake_source):
    hdir.chmod(0o755)
    dnsmasq_conf = tmp_path / 'dnsmasq.conf'
    dnsmasq_conf.write_text('port=0\npid-file=/run/test-dnsmasq.pid\n')
    conf = write_conf(tmp_path, hdir, '[dnsmasq_pxe_filter]\n'
                      'dnsmasq_start_command = true dnsmasq '
                      '--conf-file=%s\n' % dnsmasq_conf)
    code, out = run('--config-file', conf, 'check-config')
    assert code == 0, out
    assert ('info: dnsmasq is observed through /run/test-dnsmasq.pid '
            '(pid-file= in %s' % dnsmasq_conf) in out
    assert 'not observed' not in out


# -- health -------------------------------------------------------------------

HEALTHY = {'ok': True, 'ready': True, 'failed_closed': False,
           'contact_age': 1.2, 'max_stale_seconds': 300,
           'dnsmasq': {'state': 'running', 'detail': 'pid 7', 'starts': 1}}


def _serve(tmp_path, answer):
    from pxefilterd import control
    server = control.ControlServer(str(tmp_path / 'control.sock'),
                                   lambda request: answer)
    server.start()
    return server


def _health(tmp_path, hdir, *args):
    conf = write_conf(tmp_path, hdir, '[DEFAULT]\ncontrol_socket = %s\n'
                      % (tmp_path / 'control.sock'))
    return run('--config-file', conf, 'health', *args)


def test_health_ok(tmp_path, hdir):
    server = _serve(tmp_path, HEALTHY)
    try:
        code, out = _health(tmp_path, hdir)
        assert (code, out) == (0, 'healthy: serving, dnsmasq pid 7\n')
        code, out = _health(tmp_path, hdir, '--format', 'json')
        assert code == 0
        assert json.loads(out)['healthy'] is True
    finally:
        server.close()


@pytest.mark.parametrize('change, why', [
    ({'ready': False}, 'unhealthy: not ready: the first sync'),
    ({'failed_closed': True}, 'unhealthy: failed closed: ironic has not '
     'answered for max_stale_seconds (300 s)'),
    ({'contact_age': 61.0}, 'unhealthy: stale: no complete poll of ironic '
     'for 61 s (more than --stale-after 60 s)'),
    ({'contact_age': None}, 'unhealthy: stale: no complete poll of ironic '
     'for ever'),
    ({'dnsmasq': {'state': 'gone', 'detail': 'pid 7 does not exist'}},
     'unhealthy: dnsmasq is gone (pid 7 does not exist)'),
    ({'dnsmasq': {'state': 'not observed', 'detail': 'no pid file'}},
     'unhealthy: dnsmasq is not observed (no pid file)'),
    ({'dnsmasq': {'state': 'starting', 'detail': ''}},
     'unhealthy: dnsmasq is starting (-)'),
    ({'dnsmasq': {'state': 'unknown (assumed running)', 'detail': 'EACCES'}},
     'unhealthy: dnsmasq is unknown (assumed running) (EACCES)'),
])
def test_health_unhealthy(tmp_path, hdir, change, why):
    server = _serve(tmp_path, dict(HEALTHY, **change))
    try:
        code, out = _health(tmp_path, hdir)
        assert code == 1
        assert out.startswith(why), out
        # a liveness probe only asks whether the daemon answers
        assert _health(tmp_path, hdir, '--live')[0] == 0
    finally:
        server.close()


def test_health_stale_after(tmp_path, hdir):
    server = _serve(tmp_path, dict(HEALTHY, contact_age=100.0))
    try:
        assert _health(tmp_path, hdir, '--stale-after', '120')[0] == 0
        assert _health(tmp_path, hdir)[0] == 1
    finally:
        server.close()


def test_health_no_daemon(tmp_path, hdir):
    code, out = _health(tmp_path, hdir)
    assert code == 1
    assert out.startswith('unhealthy: the daemon does not answer: cannot '
                          'ask the daemon at %s' % (tmp_path / 'control.sock'))
    assert _health(tmp_path, hdir, '--live')[0] == 1
    code, out = run('--config-file', write_conf(
        tmp_path, hdir, '[DEFAULT]\ncontrol_socket =\n'), 'health')
    assert code == 1
    assert 'control_socket is empty' in out


def test_health_daemon_error(tmp_path, hdir):
    server = _serve(tmp_path, {'ok': False, 'error': 'the daemon did not '
                               'answer within 4 s'})
    try:
        code, out = _health(tmp_path, hdir, '--live')
        assert code == 1
        assert 'did not answer within 4 s' in out
    finally:
        server.close()


def test_status_of_a_child_dnsmasq(tmp_path, hdir):
    conf = tmp_path / 'child.conf'
    conf.write_text('[DEFAULT]\nroot_helper =\ncontrol_socket =\n'
                    '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
                    'dnsmasq_child_command = dnsmasq -C /x\n' % hdir)
    code, out = run('--config-file', str(conf), 'status', '--format', 'json')
    assert code == 0
    assert json.loads(out)['dnsmasq']['state'] == 'child'
