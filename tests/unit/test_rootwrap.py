"""The shipped rootwrap configuration and filters, loaded with oslo.rootwrap
itself, and run with the real ``pxefilterd-rootwrap``.

The filters name their programs by absolute path; matching is checked with
oslo.rootwrap's own functions against a temporary exec_dirs holding fakes
(``systemctl``, ``kill``, ``sh``, ``privsep-helper``...), so the result does
not depend on what this machine has installed.
"""

import configparser
import os
import pathlib

from oslo_config import cfg
from oslo_rootwrap import wrapper
import pytest

from pxefilterd import commands
from pxefilterd import conf as pxf_conf

REPO = pathlib.Path(__file__).resolve().parents[2]
FILTERS_DIR = REPO / 'rootwrap.d'
ROOTWRAP_CONF = REPO / 'etc' / 'pxefilterd' / 'rootwrap.conf'
EXAMPLE_CONF = REPO / 'etc' / 'pxefilterd' / 'pxefilterd.conf.example'
UNIT = 'pxefilterd-dnsmasq.service'


@pytest.fixture
def exec_dirs(tmp_path):
    for name in ('systemctl', 'kill', 'sh', 'pkill', 'dnsmasq', 'sudo',
                 'privsep-helper'):
        exe = tmp_path / name
        exe.write_text('#!/bin/sh\nexit 0\n')
        exe.chmod(0o755)
    return [str(tmp_path)]


@pytest.fixture
def filters():
    return wrapper.load_filters([str(FILTERS_DIR)])


def example_commands():
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf(['--config-file', str(EXAMPLE_CONF)], project='pxefilterd',
         default_config_dirs=[])
    dn = conf.dnsmasq_pxe_filter
    return [commands.split(dn.dnsmasq_start_command),
            commands.split(dn.dnsmasq_stop_command),
            commands.split(dn.dnsmasq_reload_command)]


def rootwrap_exec_dirs():
    parser = configparser.RawConfigParser()
    with open(ROOTWRAP_CONF) as f:
        parser.read_file(f)
    return wrapper.RootwrapConfig(parser).exec_dirs


def test_the_example_commands_are_the_filtered_ones():
    assert example_commands() == [
        ['systemctl', '--no-block', 'start', UNIT],
        ['systemctl', 'stop', UNIT],
        ['systemctl', 'reload', UNIT],
    ]


@pytest.mark.parametrize('argv', example_commands())
def test_default_commands_are_allowed(filters, exec_dirs, argv):
    match = wrapper.match_filter(filters, argv, exec_dirs=exec_dirs)
    assert match.run_as == 'root'
    # by absolute path, whatever exec_dirs holds
    assert match.get_exec(exec_dirs=exec_dirs) == '/usr/bin/systemctl'
    assert match.name in ('systemctl_start', 'systemctl_stop',
                          'systemctl_reload')


@pytest.mark.parametrize('argv', [['privsep-helper'],
                                  ['privsep-helper', '--config-file', 'x',
                                   '--privsep_context', 'os.system']])
def test_privsep_helper_is_unreachable_with_the_shipped_exec_dirs(
        filters, exec_dirs, argv):
    """oslo.rootwrap always adds a privsep-helper filter that takes any
    arguments; with the shipped (empty) exec_dirs it finds nothing to run,
    even where one is installed.  The same filter with a directory holding
    one would run it as root."""
    with pytest.raises(wrapper.FilterMatchNotExecutable):
        wrapper.match_filter(filters, argv, exec_dirs=rootwrap_exec_dirs())
    match = wrapper.match_filter(filters, argv, exec_dirs=exec_dirs)
    assert match.name == 'privsep-helper'     # the danger it defends from


def test_every_shipped_filter_names_an_absolute_program(filters):
    for f in filters:
        if f.name != 'privsep-helper':
            assert f.exec_path.startswith('/'), f.name


@pytest.mark.parametrize('argv', [
    # another unit
    ['systemctl', 'stop', 'dnsmasq.service'],
    ['systemctl', '--no-block', 'start', 'pxefilterd.service'],
    ['systemctl', 'stop', 'pxefilterd-dnsmasqXservice'],
    ['systemctl', 'stop', 'pxefilterd-dnsmasq.service.d'],
    ['systemctl', 'stop', 'xpxefilterd-dnsmasq.service'],
    ['systemctl', 'stop', 'pxefilterd-dnsmasq'],
    # another verb
    ['systemctl', 'restart', UNIT],
    ['systemctl', 'kill', UNIT],
    ['systemctl', 'mask', UNIT],
    ['systemctl', 'edit', UNIT],
    ['systemctl', 'start', '--no-block', UNIT],
    # the blocking start deadlocks with the shipped units: not allowed
    ['systemctl', 'start', UNIT],
    # extra or missing arguments
    ['systemctl', 'stop', UNIT, 'extra'],
    ['systemctl', 'stop', UNIT, 'pxefilterd.service'],
    ['systemctl', '--no-block', 'stop', UNIT],
    ['systemctl', 'stop'],
    ['systemctl'],
    # another way to name the binary
    ['/bin/systemctl', 'stop', UNIT],
    ['/tmp/systemctl', 'stop', UNIT],
    # other binaries (kill of a process that is not /usr/sbin/dnsmasq: this
    # test's own, pid 1, a pid that does not exist, a bad signal)
    ['kill', '-HUP', '1'],
    ['kill', '1'],
    ['kill', '-KILL', '1'],
    ['kill', '999999999'],
    ['kill', '$(cat /run/dnsmasq.pid)'],
    ['pkill', '-F', '/run/dnsmasq.pid'],
    ['/bin/sh', '-c', 'systemctl stop %s' % UNIT],
    ['sh', '-c', 'systemctl stop %s' % UNIT],
    ['dnsmasq', '--conf-file=/etc/pxefilterd/dnsmasq.conf'],
    ['dnsmasq', '-C', '/tmp/evil.conf'],
    ['dnsmasq', '--dhcp-script=/tmp/evil.sh'],
    ['/usr/sbin/dnsmasq', '--keep-in-foreground',
     '--conf-file=/etc/pxefilterd/dnsmasq.conf'],
    ['sudo', 'systemctl', 'stop', UNIT],
])
def test_near_misses_are_refused(filters, exec_dirs, argv):
    with pytest.raises(wrapper.NoFilterMatched):
        wrapper.match_filter(filters, argv, exec_dirs=exec_dirs)


def test_only_our_filters_and_rootwraps_builtin_are_loaded(filters):
    names = sorted(f.name for f in filters)
    # oslo.rootwrap always appends a privsep-helper filter: exec_dirs of
    # rootwrap.conf must not contain a privsep-helper (see admin guide).
    assert names == ['privsep-helper',
                     'systemctl_reload', 'systemctl_start', 'systemctl_stop']
    assert all(f.run_as == 'root' for f in filters)


def test_the_kill_filters_ship_disabled(tmp_path):
    """The shipped commands never signal a process: the kill filters,
    which would let the pxefilterd user signal any dnsmasq on the host,
    are commented out, with the reason; enabling them (uncommenting their
    two lines) gives the filters described there."""
    text = (FILTERS_DIR / 'pxefilterd.filters').read_text()
    filters = wrapper.load_filters([str(FILTERS_DIR)])
    assert not [f for f in filters if 'Kill' in type(f).__name__]
    assert 'ANY dnsmasq on this host' in text
    enabled = enable_kill_filters(tmp_path)
    kills = [f for f in wrapper.load_filters([str(enabled)])
             if 'Kill' in type(f).__name__]
    assert sorted(f.name for f in kills) == ['kill_dnsmasq',
                                             'kill_dnsmasq_signal']
    assert all(f.args[0] == '/usr/sbin/dnsmasq' for f in kills)


def enable_kill_filters(tmp_path):
    """A copy of the shipped filters with the kill filters enabled, as the
    comment there says; return its directory."""
    directory = tmp_path / 'rootwrap.d'
    directory.mkdir()
    text = (FILTERS_DIR / 'pxefilterd.filters').read_text()
    (directory / 'pxefilterd.filters').write_text(
        text.replace('#kill_dnsmasq', 'kill_dnsmasq'))
    return directory


def test_rootwrap_conf():
    parser = configparser.RawConfigParser()
    with open(ROOTWRAP_CONF) as f:
        parser.read_file(f)
    rw = wrapper.RootwrapConfig(parser)
    assert rw.filters_path == ['/etc/pxefilterd/rootwrap.d']
    # A directory that holds nothing: every filter has an absolute path,
    # and rootwrap's built-in privsep-helper filter must find no program.
    assert rw.exec_dirs == ['/usr/lib/pxefilterd/rootwrap-no-bin']
    assert not any(os.path.exists(d) for d in rw.exec_dirs)
    assert rw.use_syslog is False


def test_setup_cfg_installs_the_filters_where_rootwrap_conf_looks():
    setup_cfg = (REPO / 'setup.cfg').read_text()
    assert 'etc/pxefilterd/rootwrap.d = rootwrap.d/*' in setup_cfg


@pytest.mark.parametrize('argv', [
    ['kill', '-HUP', '1'],
    ['kill', '1'],
    ['kill', '-KILL', '1'],
    ['kill', '999999999'],
    ['kill', '$(cat /run/dnsmasq.pid)'],
    ['kill', '-HUP', str(os.getpid())],
])
def test_enabled_kill_filters_refuse_what_is_not_a_dnsmasq(tmp_path,
                                                         exec_dirs, argv):
    filters = wrapper.load_filters([str(enable_kill_filters(tmp_path))])
    with pytest.raises(wrapper.NoFilterMatched):
        wrapper.match_filter(filters, argv, exec_dirs=exec_dirs)
