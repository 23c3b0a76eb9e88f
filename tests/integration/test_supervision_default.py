"""Supervision without dnsmasq_pid_file: the seed's own configuration.

The specification's commands (a dnsmasq started with --conf-file=FILE whose
FILE holds pid-file=, stopped by "kill $(cat PIDFILE)") name where dnsmasq's
pid is; pxefilterd must watch it without being told again.  Real ironic,
real pxefilterd, real dnsmasq through the real rootwrap, real DHCP probes.
"""

import os
import signal
import time

from tests.integration.verdicts import UNKNOWN, eventually

FEED_ONLY = {'sync_period': 3600}


def _seed_style(dnsmasq_instance, **extra):
    return {'pxe_filter': FEED_ONLY,
            'dnsmasq_pxe_filter': dict(
                {'dnsmasq_pid_file': '',
                 'dnsmasq_stop_command':
                 'kill $(cat %s)' % dnsmasq_instance.pid_path,
                 'dnsmasq_reload_command':
                 'kill -HUP $(cat %s)' % dnsmasq_instance.pid_path}, **extra)}


def test_seed_commands_without_the_option_restart_a_killed_dnsmasq(
        enroll, ironic, runner_factory, probe, dnsmasq_instance):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options=_seed_style(dnsmasq_instance)).start()
    runner.wait_ready()
    log = runner.log_text()
    # the start command's --conf-file names it first
    assert 'pid-file= in %s' % dnsmasq_instance.conf_path in log, log
    assert 'dnsmasq is not observed' not in log
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    first = dnsmasq_instance.pid()
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    assert dnsmasq_instance.wait_gone(first, 5)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs, timeout=5)
    print('seed-style commands, no dnsmasq_pid_file: DHCP answers again '
          '%.2f s after SIGKILL of dnsmasq' % (time.monotonic() - killed))
    assert dnsmasq_instance.pid() not in (None, first)
    assert 'dnsmasq started again' in runner.log_text()
    assert runner.stop() == 0

