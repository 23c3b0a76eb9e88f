"""Command lines: plain, with shell expansions, and what runs."""

import os
import subprocess
import sys

import pytest

from pxefilterd import commands
from pxefilterd import dnsmasq
from tests import fake_dnsmasq


@pytest.mark.parametrize('line', [
    'kill $(cat /run/dnsmasq.pid)',
    'kill -HUP $(cat "/run/a dir/dnsmasq.pid")',
    'kill `cat /run/dnsmasq.pid`',
    'echo ${HOME}',
    'echo "$(echo a; echo b)"',        # operators inside an expansion
    "echo 'a;b' \"c|d\" \\;",            # quoted or escaped: words
])
def test_expansions_are_accepted(line):
    commands.check_shell_line(line)
    expected = line if commands.needs_shell(line) else None
    assert commands.Command.from_line('stop', line).line == expected


@pytest.mark.parametrize('line', [
    'kill $(cat /run/x.pid); rm -rf /',
    'kill $(cat /run/x.pid) && reboot',
    'kill $(cat /run/x.pid) | tee /tmp/x',
    'kill $(cat /run/x.pid) > /etc/passwd',
    'kill $HOME < /dev/null',
    'kill $(cat /run/x.pid) &',
    '(kill $HOME)',
    'kill $HOME\nreboot',
    'kill $(cat /run/x.pid',           # unbalanced
    'kill "$HOME',
])
def test_operators_outside_expansions_are_refused(line):
    with pytest.raises(ValueError):
        commands.Command.from_line('stop', line)
    with pytest.raises(ValueError):
        commands.split(line)


def test_plain_lines_are_split_once_and_never_see_a_shell():
    cmd = commands.Command.from_line(
        'start', "systemctl --no-block start 'a b.service'", ['sudo'])
    assert cmd.line is None
    assert cmd.argv == ['systemctl', '--no-block', 'start', 'a b.service']
    assert cmd.resolve() == ['sudo', 'systemctl', '--no-block', 'start',
                             'a b.service']


def test_expansion_gives_the_argv_the_shell_would(tmp_path):
    pid = tmp_path / 'dnsmasq.pid'
    pid.write_text('1234\n')
    cmd = commands.Command.from_line(
        'stop', 'kill -HUP $(cat %s) "two words" \'$(not expanded)\'' % pid,
        ['sudo', 'pxefilterd-rootwrap', '/etc/x.conf'])
    assert cmd.resolve() == ['sudo', 'pxefilterd-rootwrap', '/etc/x.conf',
                             'kill', '-HUP', '1234', 'two words',
                             '$(not expanded)']


def test_expansion_to_nothing_is_an_error(tmp_path):
    cmd = commands.Command.from_line('stop', '$(true)')
    with pytest.raises(commands.CommandError, match='no command'):
        cmd.run()


def test_a_hanging_expansion_times_out():
    cmd = commands.Command.from_line('stop', 'kill $(sleep 30)',
                                     timeout=0.3)
    with pytest.raises(commands.CommandError, match='timed out'):
        cmd.run()


def test_the_seeds_stop_command_stops_the_process(tmp_path):
    pid_file = str(tmp_path / 'dnsmasq.pid')
    fake_dnsmasq.start(pid_file)
    pid = int(open(pid_file).read())
    assert dnsmasq.observe(pid_file).state == dnsmasq.RUNNING
    cmd = commands.Command.from_line('stop', 'kill $(cat %s)' % pid_file)
    cmd.run()
    deadline = 50
    while fake_dnsmasq.alive(pid) and deadline:
        deadline -= 1
        subprocess.run(['sleep', '0.05'])
    assert not fake_dnsmasq.alive(pid)
    assert dnsmasq.observe(pid_file).state == dnsmasq.GONE


def test_spec_round_trip():
    cmd = commands.Command.from_line('stop', 'kill $(cat /x)', ['sudo'], 7)
    again = commands.Command.from_spec(cmd.spec())
    assert (again.name, again.line, again.argv, again.root_helper,
            again.timeout) == ('stop', 'kill $(cat /x)', [], ['sudo'], 7)


# -- observing dnsmasq ----------------------------------------------------

def test_observe_without_a_pid_file_says_so():
    seen = dnsmasq.observe(None)
    assert seen.state == dnsmasq.UNKNOWN
    assert 'dnsmasq_pid_file' in seen.detail


@pytest.mark.parametrize('content,detail', [
    (None, 'does not exist'),
    ('garbage', 'not a pid'),
    ('0', 'holds 0'),
    ('999999999', 'does not exist'),
])
def test_observe_gone(tmp_path, content, detail):
    path = tmp_path / 'dnsmasq.pid'
    if content is not None:
        path.write_text(content)
    seen = dnsmasq.observe(str(path))
    assert seen.state == dnsmasq.GONE
    assert detail in seen.detail


def test_observe_a_pid_reused_by_another_program(tmp_path):
    path = tmp_path / 'dnsmasq.pid'
    path.write_text('%d\n' % os.getpid())
    seen = dnsmasq.observe(str(path))
    assert seen.state == dnsmasq.GONE and 'not dnsmasq' in seen.detail


def test_observe_a_dead_child_zombie(tmp_path):
    path = tmp_path / 'dnsmasq.pid'
    exe = tmp_path / 'dnsmasq'
    os.symlink('/bin/true', exe)
    proc = subprocess.Popen([str(exe)])
    path.write_text('%d\n' % proc.pid)
    deadline = 100
    while dnsmasq.observe(str(path)).state == dnsmasq.RUNNING and deadline:
        deadline -= 1
        subprocess.run(['sleep', '0.02'])
    assert dnsmasq.observe(str(path)).state == dnsmasq.GONE   # a zombie
    proc.wait()


def test_command_runner_runs_in_order_off_the_caller(tmp_path):
    log = tmp_path / 'log'
    woken = []
    runner = dnsmasq.CommandRunner(wake=lambda: woken.append(1))
    futures = [runner.submit(commands.Command(
        str(i), [sys.executable, '-c',
                 'open(%r, "a").write("%d")' % (str(log), i)]))
        for i in range(3)]
    failing = runner.submit(commands.Command('bad', ['false']))
    for f in futures:
        assert f.result(10) == ''
    with pytest.raises(commands.CommandError):
        failing.result(10)
    assert log.read_text() == '012'
    assert len(woken) == 4
    runner.shutdown()
