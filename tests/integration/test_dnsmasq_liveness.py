"""dnsmasq is either serving the right list or stopped: real processes.

Real ironic, real pxefilterd, real dnsmasq started and stopped by it through
the real pxefilterd-rootwrap (filters for this dnsmasq, as the shipped ones),
real DHCP probes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pxefilterd_harness.dnsmasq import DnsmasqInstance
from tests.integration.verdicts import UNKNOWN, eventually, offered

FEED_ONLY = {'sync_period': 3600}


def test_dnsmasq_killed_serves_the_right_list_again(enroll, ironic,
                                                    runner_factory, probe,
                                                    dnsmasq_instance):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options={'pxe_filter': FEED_ONLY}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    first = dnsmasq_instance.pid()
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    assert DnsmasqInstance.wait_gone(first, 5)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs, timeout=5)
    back = time.monotonic() - killed
    print('DHCP answers again %.2f s after SIGKILL of dnsmasq' % back)
    assert dnsmasq_instance.pid() not in (None, first)
    log = runner.log_text()
    # a dnsmasq that ran for less than START_GRACE counts as a failed start
    # (restarted after a 1 s backoff), an older one is restarted at once
    assert ('dnsmasq is not running (pid %d' % first in log
            or 'dnsmasq exited' in log and 'pid %d' % first in log), log
    assert 'dnsmasq started again' in log
    assert runner.stop() == 0


@pytest.mark.parametrize('ending', ['SIGTERM', 'SIGKILL'])
def test_the_seeds_kill_stop_command_stops_dnsmasq(enroll, ironic,
                                                   runner_factory, probe,
                                                   dnsmasq_instance, ending):
    """dnsmasq_stop_command = kill $(cat PIDFILE), as the specification
    writes it: expanded by a shell as pxefilterd's user, "kill <pid>"
    through rootwrap (KillFilter: only a dnsmasq)."""
    (a, a_macs, _), = enroll(1)
    stop = 'kill $(cat %s)' % dnsmasq_instance.pid_path
    runner = runner_factory(options={
        'pxe_filter': FEED_ONLY,
        'dnsmasq_pxe_filter': {'dnsmasq_stop_command': stop,
                               'dnsmasq_reload_command':
                               'kill -HUP $(cat %s)'
                               % dnsmasq_instance.pid_path}}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[])
    pid = dnsmasq_instance.pid()
    started = time.monotonic()
    if ending == 'SIGTERM':
        assert runner.stop() == 0
    else:
        runner.kill()
    assert DnsmasqInstance.wait_gone(pid, 5), runner.log_text()[-2000:]
    print('dnsmasq gone %.2f s after %s of pxefilterd (kill $(cat PIDFILE))'
          % (time.monotonic() - started, ending))
    assert offered(probe, a_macs) == set()


def test_guard_terminated_brings_dnsmasq_back(enroll, ironic, runner_factory,
                                              probe, dnsmasq_instance):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options={'pxe_filter': FEED_ONLY}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    first = dnsmasq_instance.pid()
    guards = [p for p in _children(runner.pid)
              if b'pxefilterd.guard' in _cmdline(p)]
    assert len(guards) == 1
    os.kill(guards[0], signal.SIGTERM)
    killed = time.monotonic()
    assert DnsmasqInstance.wait_gone(first, 5)     # it fails closed...
    # ... and the daemon starts dnsmasq again on the right list
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs, timeout=10)
    print('DHCP answers again %.2f s after SIGTERM of the guard'
          % (time.monotonic() - killed))
    log = runner.log_text()
    # Either the pid file or the guard's exit status is seen first.
    assert 'The guard process exited unexpectedly (status 3)' in log
    assert 'dnsmasq started again' in log
    assert runner.proc.poll() is None
    assert runner.stop() == 0


def test_a_reload_failing_in_a_burst_is_not_fatal(ironic_factory,
                                                  runner_factory, probe,
                                                  dnsmasq_instance,
                                                  harness_tmp):
    """max_burst 5, 30 nodes enter inspection between two polls: the files
    are written at once and the reload fails (its pid file holds garbage):
    each file is written again, paced, and dnsmasq reads them without a
    reload."""
    big = ironic_factory()
    load = big.bulk_load(30, 1, '52:54:04')
    big.start()
    bogus = harness_tmp / 'reload.pid'
    bogus.write_text('not-a-pid\n')
    runner = runner_factory(url=big.url, options={
        # no poll until SIGHUP kicks it: the 30 changes arrive at once,
        # however slowly ironic takes the inspect requests
        'pxe_filter': dict(FEED_ONLY, inspection_poll_interval=3600),
        'dnsmasq_pxe_filter': {'max_burst': 5, 'burst_rate': 50,
                               'compaction_interval': 0,
                               'dnsmasq_reload_command':
                               'kill -HUP $(cat %s)' % bogus}}).start()
    runner.wait_ready()
    for node in load.nodes:
        big.set_provision_state(node, 'inspect')
    for node in load.nodes:
        big.wait_for_state(node, 'inspect wait')
    runner.proc.send_signal(signal.SIGHUP)
    kicked = time.monotonic()
    runner.wait_for_log('dnsmasq reload (after 31 changes) failed',
                        timeout=30)     # 30 MACs and the wildcard
    eventually(probe, allowed=sorted(load.ports), denied=[], timeout=20)
    print('all 30 MACs answered %.2f s after the poll that found them (the '
          'reload failed; paced at 50/s instead)'
          % (time.monotonic() - kicked))
    assert runner.proc.poll() is None
    assert 'writing' in runner.log_text() and 'again, paced' in \
        runner.log_text()
    assert runner.stop() == 0


@pytest.mark.parametrize('name', ['evil', 'mac'])
def test_a_symlink_dropped_in_is_quarantined(enroll, ironic, runner_factory,
                                             probe, dnsmasq_instance,
                                             harness_tmp, name):
    """dnsmasq follows symlinks: one pointing at an allow line for a denied
    MAC would let it boot.  It is moved away and the MAC stays denied."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options={'pxe_filter': FEED_ONLY}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    target = harness_tmp / 'allow-b'
    target.write_text(b_macs[0] + '\n')
    target.chmod(0o644)
    hostsdir = dnsmasq_instance.hostsdir
    link = hostsdir / ('evil' if name == 'evil' else b_macs[0])
    # Planted by rename, over the MAC's own file if there is one: deleting
    # that file first races the daemon, which puts it back at once.
    planted = harness_tmp / 'planted'
    planted.symlink_to(target)
    os.replace(planted, link)
    dropped = time.monotonic()
    runner.wait_for_log('was a symlink to', timeout=10)
    print('symlink %s quarantined within %.2f s' % (
        link.name, time.monotonic() - dropped))
    assert not link.is_symlink()
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs, timeout=5)
    assert runner.stop() == 0


def _children(pid):
    result = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry, 'rb') as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(b')') + 2:].split()[1]) == pid:
                result.append(int(entry))
    return result


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read()
    except OSError:
        return b''


@pytest.mark.parametrize('form', ['single-digit', 'one-group',
                                  'mac-file-other-mac'])
def test_a_foreign_record_in_any_form_is_forgotten_within_3s(
        enroll, ironic, runner_factory, probe, dnsmasq_instance,
        harness_tmp, form):
    """dnsmasq reads MACs in more forms than pxefilterd recognises
    (``52:54:0:0:0:99``, ``525400000099``...) and keeps what it read: a
    foreign entry allowing a denied MAC is quarantined AND dnsmasq is made
    to re-read the directory, so that MAC gets no offer within 3 s."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options={'pxe_filter': FEED_ONLY}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    denied = b_macs[0]
    octets = denied.split(':')
    if form == 'single-digit':
        # 52:54:00:00:00:10 -> 52:54:0:0:0:10
        line = ':'.join('%x' % int(o, 16) for o in octets)
        name = 'evil'
    elif form == 'one-group':
        line, name = ''.join(octets), 'evil'
    else:
        # a file named after an allowed MAC, holding the denied one
        line = ':'.join('%x' % int(o, 16) for o in octets)
        name = a_macs[0]
    assert line != denied
    hostsdir = dnsmasq_instance.hostsdir
    staged = harness_tmp / 'foreign'
    staged.write_text(line + '\n')
    staged.chmod(0o644)
    os.rename(staged, hostsdir / name)     # one IN_MOVED_TO, as a real drop
    dropped = time.monotonic()
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs, timeout=3)
    print('foreign %s record forgotten within %.2f s'
          % (form, time.monotonic() - dropped))
    # and it stays forgotten: no later answer from it
    time.sleep(1.0)
    assert offered(probe, [denied]) == set()
    assert 'foreign entry' in runner.log_text()
    assert runner.stop() == 0
