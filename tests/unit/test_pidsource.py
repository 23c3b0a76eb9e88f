"""Deriving dnsmasq's pid file from the configured commands."""

import pytest

from pxefilterd import pidsource

SEED_START = 'dnsmasq --conf-file=/etc/ironic-inspector/dnsmasq.conf'
SEED_STOP = 'kill $(cat /var/run/dnsmasq.pid)'


def files(by_path=None):
    """A read_text over ``by_path`` ({path: text}); other paths are missing."""
    by_path = by_path or {}

    def read(path):
        try:
            return by_path[path]
        except KeyError:
            raise FileNotFoundError(path) from None
    return read


def derive(**kwargs):
    kwargs.setdefault('read_text', files())
    return pidsource.derive(**kwargs)


def test_the_option_wins_over_everything():
    src = derive(pid_file='/run/x.pid', start='dnsmasq --pid-file=/run/y.pid',
                 stop=SEED_STOP)
    assert src.path == '/run/x.pid'
    assert src.origin == pidsource.OPTION


@pytest.mark.parametrize('start', [
    'dnsmasq --pid-file=/run/d.pid -d',
    '/usr/sbin/dnsmasq -x /run/d.pid',
    'ip netns exec pxe dnsmasq -x/run/d.pid --port=0',
])
def test_pid_file_on_the_start_command(start):
    src = derive(start=start, stop=SEED_STOP)
    assert src.path == '/run/d.pid'
    assert 'start command' in src.origin


@pytest.mark.parametrize('start', [
    'dnsmasq --conf-file=/etc/d.conf',
    'dnsmasq -C /etc/d.conf --keep-in-foreground',
    'dnsmasq -C/etc/d.conf',
])
def test_pid_file_line_of_the_conf_file(start):
    read = files({'/etc/d.conf': '# a comment\npid-file=/run/old.pid\n'
                  'interface=eth1  # trailing\n pid-file = /run/d.pid \n'})
    src = pidsource.derive(start=start, read_text=read)
    assert src.path == '/run/d.pid'          # the last one, as dnsmasq
    assert '/etc/d.conf' in src.origin


def test_the_seed_commands_are_observed_through_the_stop_command():
    # the seed's conf file is not readable (or has no pid-file= line): the
    # stop command's $(cat FILE) says where the pid is
    src = derive(start=SEED_START, stop=SEED_STOP)
    assert src.path == '/var/run/dnsmasq.pid'
    assert 'stop command' in src.origin


@pytest.mark.parametrize('stop', [
    'kill -TERM $(cat /run/d.pid)',
    'kill `cat /run/d.pid`',
    'pkill -F /run/d.pid',
    'pkill --pidfile=/run/d.pid dnsmasq',
])
def test_other_command_forms(stop):
    assert derive(start='dnsmasq -d', stop=stop).path == '/run/d.pid'


def test_reload_command_is_read_too():
    src = derive(start='dnsmasq -d', stop='pkill dnsmasq',
                 reload='kill -HUP $(cat /run/d.pid)')
    assert src.path == '/run/d.pid'
    assert 'reload command' in src.origin


def test_systemctl_start_reads_the_units_exec_start():
    asked = []

    def unit_argv(unit):
        asked.append(unit)
        return ['/usr/sbin/dnsmasq', '--keep-in-foreground',
                '--conf-file=/etc/pxefilterd/dnsmasq.conf']
    read = files({'/etc/pxefilterd/dnsmasq.conf':
                  'pid-file=/run/pxefilterd-dnsmasq/dnsmasq.pid\n'})
    src = pidsource.derive(
        start='systemctl --no-block start pxefilterd-dnsmasq.service',
        stop='systemctl stop pxefilterd-dnsmasq.service',
        read_text=read, unit_argv=unit_argv)
    assert asked == ['pxefilterd-dnsmasq.service']
    assert src.path == '/run/pxefilterd-dnsmasq/dnsmasq.pid'
    assert 'ExecStart of pxefilterd-dnsmasq.service' in src.origin


def test_nothing_to_observe_says_which_option_to_set():
    src = derive(start='systemctl start other.service',
                 stop='systemctl stop other.service',
                 unit_argv=lambda unit: None)
    assert not src.observed
    assert pidsource.OPTION in src.origin
    assert 'other.service' in src.origin
    assert not derive().observed
    assert not derive(start='dnsmasq -d', stop='pkill dnsmasq').observed


def test_exec_start_argv_parses_systemctl_show():
    out = ('{ path=/usr/sbin/dnsmasq ; argv[]=/usr/sbin/dnsmasq '
           '--keep-in-foreground --conf-file=/etc/d.conf ; ignore_errors=no '
           '; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; '
           'status=0/0 }')
    assert pidsource.exec_start_argv(out) == [
        '/usr/sbin/dnsmasq', '--keep-in-foreground', '--conf-file=/etc/d.conf']
    assert pidsource.exec_start_argv('') is None


def test_check_dnsmasq_argv_flags_the_seeds_separate_word_form():
    seed = 'dnsmasq --conf-file /etc/ironic-inspector/dnsmasq.conf'.split()
    problems = pidsource.check_dnsmasq_argv(seed)
    assert len(problems) == 1
    assert 'junk found in command line' in problems[0]
    assert '--conf-file=/etc/ironic-inspector/dnsmasq.conf' in problems[0]
    assert pidsource.check_dnsmasq_argv(SEED_START.split()) == []
    # options that take a required argument may have it as the next word
    assert pidsource.check_dnsmasq_argv(
        ['dnsmasq', '--interface', 'eth1', '-C', '/etc/d.conf',
         '--pid-file', '--port=0']) == []
