"""Shipped operator files: systemd units, tmpfiles, dnsmasq and pxefilterd
example configs, the generated sample, the devstack plugin; what the runtime
wheel holds (no test harness, no benchmark).

Tools that may be missing (systemd-analyze, shellcheck, dnsmasq,
oslo-config-generator) make their test skip with the reason.
"""

import difflib
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

from oslo_config import cfg
import pytest

from pxefilterd.cmd import daemon
from pxefilterd import conf as pxf_conf

REPO = pathlib.Path(__file__).resolve().parents[2]
SYSTEMD = REPO / 'systemd'
ETC = REPO / 'etc' / 'pxefilterd'
UNITS = ('pxefilterd.service', 'pxefilterd-dnsmasq.service')
HOSTSDIR = '/var/lib/pxefilterd/dhcp-hostsdir'


def unit(name):
    """Parse a unit file: {section: {key: [values]}} (keys may repeat)."""
    sections = {}
    current = None
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('['):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition('=')
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(sections, section, key):
    values = sections[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


# -- systemd units ------------------------------------------------------------

def test_pxefilterd_unit():
    u = unit('pxefilterd.service')
    assert one(u, 'Service', 'Type') == 'notify'
    assert one(u, 'Service', 'WatchdogSec') == '30'
    assert one(u, 'Service', 'Restart') == 'on-failure'
    assert one(u, 'Service', 'RestartPreventExitStatus') == '78'
    assert one(u, 'Service', 'User') == 'pxefilterd'
    assert one(u, 'Service', 'StateDirectory') == 'pxefilterd'
    assert one(u, 'Service', 'StateDirectoryMode') == '0755'
    assert one(u, 'Service', 'UMask') == '0022'
    assert one(u, 'Service', 'ExecStart') == (
        '/usr/local/bin/pxefilterd '
        '--config-file /etc/pxefilterd/pxefilterd.conf')
    # SIGTERM to the daemon only: it stops dnsmasq and disarms its guard
    # itself; the guard must not get SIGTERM (it would run stop again).
    assert one(u, 'Service', 'KillMode') == 'mixed'
    # sudo must keep working: no NoNewPrivileges / strict read-only root
    assert 'NoNewPrivileges' not in u['Service']
    assert u['Service'].get('ProtectSystem', ['full']) != ['strict']
    assert one(u, 'Install', 'WantedBy') == 'multi-user.target'


def test_the_unit_sets_the_descriptor_limit_above_what_side_services_take():
    """Security review: descriptors ran out under a flood of metrics
    connections.  The limit is explicit and leaves ample room above what
    the capped side services can take."""
    from pxefilterd import control
    from pxefilterd import metrics
    limit = int(one(unit('pxefilterd.service'), 'Service', 'LimitNOFILE'))
    assert limit >= 4 * (control.MAX_CONNECTIONS + metrics.MAX_CONNECTIONS
                         + 200)


def test_exit_78_is_the_daemons_config_exit_status():
    from pxefilterd import service
    assert service.EXIT_CONFIG == 78


def test_dnsmasq_unit_follows_pxefilterd():
    u = unit('pxefilterd-dnsmasq.service')
    assert one(u, 'Unit', 'BindsTo') == 'pxefilterd.service'
    assert one(u, 'Unit', 'PartOf') == 'pxefilterd.service'
    assert 'pxefilterd.service' in one(u, 'Unit', 'After').split()
    assert one(u, 'Service', 'ExecStart') == (
        '/usr/sbin/dnsmasq --keep-in-foreground '
        '--conf-file=/etc/pxefilterd/dnsmasq.conf')
    assert one(u, 'Service', 'ExecReload') == '/bin/kill -HUP $MAINPID'
    # never enabled on its own: pxefilterd starts it
    assert 'Install' not in u


def test_tmpfiles_creates_the_hostsdir_readable_by_dnsmasq():
    lines = [line.split() for line in
             (SYSTEMD / 'tmpfiles.d' / 'pxefilterd.conf').read_text()
             .splitlines() if line.strip() and not line.startswith('#')]
    by_path = {fields[1]: fields for fields in lines}
    for path in ('/var/lib/pxefilterd', HOSTSDIR,
                 '/var/lib/pxefilterd/.dhcp-hostsdir.staging'):
        assert by_path[path][0] == 'd'
        assert by_path[path][2] == '0755'
        assert by_path[path][3:5] == ['pxefilterd', 'pxefilterd']


def test_systemd_tmpfiles_creates_them(tmp_path):
    tool = shutil.which('systemd-tmpfiles')
    if tool is None:
        pytest.skip('systemd-tmpfiles is not installed')
    if os.geteuid() != 0:
        pytest.skip('systemd-tmpfiles --create chowns: needs root')
    root = tmp_path / 'root'
    (root / 'etc').mkdir(parents=True)
    (root / 'etc/passwd').write_text(
        'root:x:0:0::/root:/bin/sh\n'
        'pxefilterd:x:4242:4242::/var/lib/pxefilterd:/usr/sbin/nologin\n')
    (root / 'etc/group').write_text('root:x:0:\npxefilterd:x:4242:\n')
    snippet = tmp_path / 'pxefilterd.conf'
    shutil.copy(SYSTEMD / 'tmpfiles.d' / 'pxefilterd.conf', snippet)
    subprocess.run([tool, '--root=%s' % root, '--create', str(snippet)],
                   check=True, capture_output=True, timeout=60)
    for rel in ('var/lib/pxefilterd', 'var/lib/pxefilterd/dhcp-hostsdir',
                'var/lib/pxefilterd/.dhcp-hostsdir.staging'):
        st = os.stat(root / rel)
        assert (st.st_uid, st.st_gid) == (4242, 4242)
        assert st.st_mode & 0o7777 == 0o755


def test_systemd_sysusers_snippet(tmp_path):
    tool = shutil.which('systemd-sysusers')
    if tool is None:
        pytest.skip('systemd-sysusers is not installed')
    (tmp_path / 'etc').mkdir()
    proc = subprocess.run(
        [tool, '--root=%s' % tmp_path, '--dry-run',
         str(SYSTEMD / 'sysusers.d' / 'pxefilterd.conf')],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'pxefilterd' in proc.stdout + proc.stderr


def test_the_daemon_user_has_no_home():
    """A home it owns would hold per-user configuration (oslo.config looks
    in ~/.pxefilterd/), so the daemon user gets none."""
    users = [line.split('"')[-1].split() for line in
             (SYSTEMD / 'sysusers.d' / 'pxefilterd.conf').read_text()
             .splitlines() if line.startswith('u ')]
    assert users == [['/nonexistent']]


def test_operators_reach_the_socket_without_the_daemons_group():
    """The control socket's group is created by sysusers and the daemon
    is a member (to give it the socket); operators, in that group, can
    reach /run/pxefilterd but never read pxefilterd.conf."""
    from pxefilterd.conf import default
    group = {o.dest: o.default for o in default.opts}['control_socket_group']
    groups = [line.split()[1] for line in
              (SYSTEMD / 'sysusers.d' / 'pxefilterd.conf').read_text()
              .splitlines() if line.startswith('g ')]
    assert groups == [group] and group != 'pxefilterd'
    u = unit('pxefilterd.service')
    assert one(u, 'Service', 'SupplementaryGroups') == group
    assert one(u, 'Service', 'RuntimeDirectoryMode') == '0755'
    readme = (REPO / 'README.md').read_text()
    assert ('install -m 0640 -g pxefilterd '
            'etc/pxefilterd/pxefilterd.conf.example') in readme
    assert 'usermod -a -G %s' % group in readme


def test_hostsdir_is_the_same_everywhere():
    dnsmasq_conf = (ETC / 'dnsmasq.conf').read_text().splitlines()
    assert 'dhcp-hostsdir=%s' % HOSTSDIR in dnsmasq_conf
    assert 'port=0' in dnsmasq_conf
    # DHCPv6 clients whose MAC dnsmasq cannot learn: ignored, not offered
    # (tests/integration/test_clients.py uses this very line)
    assert 'dhcp-ignore=tag:dhcpv6,tag:!known' in dnsmasq_conf
    # InfiniBand clients match only id: records
    assert not [line for line in dnsmasq_conf
                if line.lstrip('#').startswith('dhcp-ignore-clid')]
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == HOSTSDIR
    conf(['--config-file', str(ETC / 'pxefilterd.conf.example')],
         project='pxefilterd', default_config_dirs=[])
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == HOSTSDIR


def _fake_exe(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nexit 0\n')
    path.chmod(0o755)


def test_systemd_analyze_verify(tmp_path):
    """Verify both units inside a temporary root.

    The root holds a copy of this machine's unit directory (for the
    targets the units depend on), the units under test and fake
    executables for every Exec*= binary, so nothing needs installing.
    """
    analyze = shutil.which('systemd-analyze')
    if analyze is None:
        pytest.skip('systemd-analyze is not installed')
    system_units = pathlib.Path('/usr/lib/systemd/system')
    if not (system_units / 'multi-user.target').exists():
        pytest.skip('no systemd unit directory at %s' % system_units)
    root = tmp_path / 'root'
    shutil.copytree(system_units, root / 'usr/lib/systemd/system',
                    symlinks=True)
    etc_units = root / 'etc/systemd/system'
    etc_units.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD / name, etc_units / name)
        for section in unit(name).values():
            for key, values in section.items():
                if key.startswith('Exec'):
                    for value in values:
                        exe = value.lstrip('-@:+!').split()[0]
                        _fake_exe(root / exe.lstrip('/'))
    # /bin, /sbin -> usr (merged /usr), like Debian 12
    for link in ('bin', 'sbin'):
        if not (root / link).exists():
            (root / link).symlink_to('usr/' + link)
    env = dict(os.environ, SYSTEMD_LOG_COLOR='0', SYSTEMD_PAGER='')
    proc = subprocess.run(
        [analyze, 'verify', '--man=no', '--root=%s' % root] + list(UNITS),
        capture_output=True, text=True, env=env, timeout=120)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if 'pxefilterd' in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_example_config_passes_the_daemons_checks(tmp_path):
    hostsdir = tmp_path / 'dhcp-hostsdir'
    hostsdir.mkdir()
    override = tmp_path / 'override.conf'
    override.write_text(
        '[DEFAULT]\nrootwrap_config = %s\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        % (ETC / 'rootwrap.conf', hostsdir))
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    problems = daemon.load_config(conf, [
        '--config-file', str(ETC / 'pxefilterd.conf.example'),
        '--config-file', str(override)])
    assert problems == []


def test_dnsmasq_conf_syntax(tmp_path):
    dnsmasq = shutil.which('dnsmasq') or (
        '/usr/sbin/dnsmasq' if os.path.exists('/usr/sbin/dnsmasq') else None)
    if dnsmasq is None:
        pytest.skip('dnsmasq is not installed')
    proc = subprocess.run(
        [dnsmasq, '--test', '--conf-file=%s' % (ETC / 'dnsmasq.conf')],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert 'syntax check OK' in proc.stdout + proc.stderr


# -- generated sample ---------------------------------------------------------

def test_sample_config_is_up_to_date(tmp_path):
    generator = shutil.which('oslo-config-generator',
                             path=os.path.dirname(sys.executable))
    if generator is None:
        generator = shutil.which('oslo-config-generator')
    if generator is None:
        pytest.skip('oslo-config-generator is not installed')
    out = tmp_path / 'pxefilterd.conf.sample'
    subprocess.run(
        [generator, '--config-file',
         str(ETC / 'config-generator.conf'), '--output-file', str(out)],
        check=True, cwd=REPO, timeout=120)
    committed = (ETC / 'pxefilterd.conf.sample').read_text()
    fresh = out.read_text()
    if committed != fresh:
        diff = ''.join(difflib.unified_diff(
            committed.splitlines(True), fresh.splitlines(True),
            'etc/pxefilterd/pxefilterd.conf.sample (committed)',
            'regenerated'))
        pytest.fail('etc/pxefilterd/pxefilterd.conf.sample is out of date; '
                    'run "tox -e genconfig" and commit the result.\n'
                    + diff[:4000])


def test_config_generator_conf():
    # namespace repeats: read the lines, not with configparser
    pairs = [line.split('=', 1) for line in
             (ETC / 'config-generator.conf').read_text().splitlines()
             if '=' in line and not line.startswith('#')]
    pairs = [(k.strip(), v.strip()) for k, v in pairs]
    assert ('output_file', 'etc/pxefilterd/pxefilterd.conf.sample') in pairs
    assert [v for k, v in pairs if k == 'namespace'] == [
        'pxefilterd', 'oslo.log']


# -- devstack -----------------------------------------------------------------

def test_devstack_plugin_shellcheck():
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.skip('shellcheck is not installed')
    proc = subprocess.run(
        [shellcheck, '-s', 'bash', 'devstack/plugin.sh', 'devstack/settings'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tools_shellcheck():
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.skip('shellcheck is not installed')
    scripts = sorted(str(p.relative_to(REPO))
                     for p in REPO.glob('tools/**/*.sh'))
    assert 'tools/lib.sh' in scripts
    proc = subprocess.run(
        [shellcheck, '-x', '-s', 'bash', '.ci/run', *scripts],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_devstack_plugin_installs_the_shipped_files():
    plugin = (REPO / 'devstack' / 'plugin.sh').read_text()
    for path in ('etc/pxefilterd/rootwrap.conf',
                 'rootwrap.d/pxefilterd.filters',
                 'etc/pxefilterd/dnsmasq.conf',
                 'etc/pxefilterd/pxefilterd.conf.example'):
        assert '$PXEFILTERD_DIR/%s' % path in plugin
        assert (REPO / path).is_file()
    for name in UNITS:
        assert name in plugin


def test_setup_cfg_ships_the_operator_files():
    setup_cfg = (REPO / 'setup.cfg').read_text()
    for path in ('etc/pxefilterd/pxefilterd.conf.sample',
                 'etc/pxefilterd/pxefilterd.conf.example',
                 'etc/pxefilterd/dnsmasq.conf',
                 'etc/pxefilterd/rootwrap.conf',
                 'systemd/pxefilterd.service',
                 'systemd/pxefilterd-dnsmasq.service',
                 'systemd/tmpfiles.d/*', 'systemd/sysusers.d/*',
                 'doc/source/admin-guide.md'):
        assert path in setup_cfg, path
        # pbr expands only a trailing "dir/*"
        assert '*' not in path or path.endswith('/*')


def test_watchdog_has_the_overflow_hook_the_watcher_uses():
    """pxefilterd/watcher.py wraps InotifyWatchGroup.on_queue_overflow,
    which watchdog calls when the kernel's inotify queue overflows; it
    exists from 7.1.0 on (older releases drop the overflow silently)."""
    from importlib import metadata

    from watchdog.observers import inotify
    requirement = [line for line in (REPO / 'requirements.txt').read_text()
                   .splitlines() if line.startswith('watchdog')]
    assert requirement == ['watchdog>=7.1.0,<8']
    version = tuple(int(p) for p in metadata.version('watchdog').split('.')
                    [:2])
    assert (7, 1) <= version < (8, 0)
    assert callable(inotify.InotifyWatchGroup.on_queue_overflow)
    assert 'self._inotify = InotifyWatchGroup(' in inspect.getsource(
        inotify.InotifyEmitter.on_thread_start)


def test_license_is_an_spdx_expression_not_a_classifier():
    """setuptools deprecates license classifiers (a warning on every
    build); the metadata says License-Expression: Apache-2.0."""
    setup_cfg = (REPO / 'setup.cfg').read_text()
    assert 'license_expression = Apache-2.0\n' in setup_cfg
    assert 'License ::' not in setup_cfg


# -- what "pip install ." installs --------------------------------------------

#: Top-level names of the development-only distribution in harness/.
HARNESS_PACKAGES = ('pxefilterd_harness', 'pxefilterd_bench')


def _copy_source(dest):
    """Copy the source tree without git, venvs and build leftovers, so that
    the build below cannot write into the checkout."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        '.git', '.venv*', '.tox', '__pycache__', '*.egg-info', 'build',
        'dist', '.ruff_cache', '.hypothesis', '.pytest_cache',
        'bench-results*.json'))


@pytest.fixture(scope='module')
def runtime_install(tmp_path_factory):
    """What "pip install ." installs, built offline from a copy of the source
    tree with the setuptools and pbr of this environment.

    A wheel of this project is the tree build_py makes (pure Python, no
    scripts of its own) plus the metadata egg_info writes; those two
    commands are run instead of bdist_wheel, which setuptools before 70.1
    lacks unless the wheel package is installed.

    Returns (file names relative to site-packages, entry_points.txt text).
    """
    for module in ('setuptools', 'pbr'):
        pytest.importorskip(module)
    src = tmp_path_factory.mktemp('src') / 'pxefilterd'
    _copy_source(src)
    lib = tmp_path_factory.mktemp('lib')
    meta = tmp_path_factory.mktemp('meta')
    # No .git in the copy: pbr takes the version from PBR_VERSION and
    # skips AUTHORS and ChangeLog.
    env = dict(os.environ, PBR_VERSION='0.0.0', SKIP_GENERATE_AUTHORS='1',
               SKIP_WRITE_GIT_CHANGELOG='1', SKIP_GIT_SDIST='1')
    proc = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'build_py', '--build-lib',
         str(lib), 'egg_info', '--egg-base', str(meta)],
        cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    names = sorted(str(p.relative_to(lib)) for p in lib.rglob('*')
                   if p.is_file())
    entry_points = list(meta.glob('*.egg-info/entry_points.txt'))
    assert len(entry_points) == 1, list(meta.rglob('*'))
    return names, entry_points[0].read_text()


def test_runtime_install_holds_the_daemon(runtime_install):
    names, entry_points = runtime_install
    for path in ('pxefilterd/policy.py', 'pxefilterd/service.py',
                 'pxefilterd/cmd/daemon.py', 'pxefilterd/conf/__init__.py'):
        assert path in names, path
    assert 'pxefilterd = pxefilterd.cmd.daemon:main' in entry_points
    assert 'pxefilterd-ctl = pxefilterd.cmd.ctl:main' in entry_points


def test_runtime_install_has_no_harness_and_no_benchmark(runtime_install):
    names, entry_points = runtime_install
    modules = [n for n in names if n.endswith('.py')]
    assert not [n for n in modules
                if n.startswith(('pxefilterd/testing/', 'pxefilterd/bench/',
                                 'tests/', 'harness/')
                                + tuple(p + '/' for p in HARNESS_PACKAGES))]
    assert {n.split('/')[0] for n in modules} == {'pxefilterd'}
    assert 'pxefilterd-bench' not in entry_points
    assert 'bench' not in entry_points and 'testing' not in entry_points
    assert 'pxefilterd-bench' not in (REPO / 'setup.cfg').read_text()


def test_harness_distribution_provides_what_the_runtime_does_not():
    """harness/ is the other half: its packages and pxefilterd-bench."""
    project = tomllib.loads((REPO / 'harness' / 'pyproject.toml').read_text())
    assert tuple(project['tool']['setuptools']['packages']) == (
        HARNESS_PACKAGES)
    assert project['project']['scripts'] == {
        'pxefilterd-bench': 'pxefilterd_bench.cli:main'}
    # pxefilterd is not declared: a resolver would fetch it from the index
    # instead of using the checkout installed beside it
    assert not project['project'].get('dependencies')
    for package in HARNESS_PACKAGES:
        assert (REPO / 'harness' / package / '__init__.py').is_file()
    tox = (REPO / 'tox.ini').read_text()
    assert '-e{toxinidir}/harness' in tox
    assert 'ruff check pxefilterd harness tests tools' in tox


def test_runtime_package_imports_nothing_from_the_harness():
    offenders = []
    for path in (REPO / 'pxefilterd').rglob('*.py'):
        text = path.read_text()
        if any(name in text for name in HARNESS_PACKAGES + (
                'pxefilterd.testing', 'pxefilterd.bench')):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders
