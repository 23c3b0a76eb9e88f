"""pxefilterd end to end: real ironic, real dnsmasq, real DHCP DISCOVERs.

Every assertion is about what a real dnsmasq answers to a DHCPDISCOVER from
a chosen MAC (raw probe, see pxefilterd_harness.dhcp_probe), with dnsmasq
started and stopped *by pxefilterd* through pxefilterd-rootwrap.
"""

from __future__ import annotations

import os
import signal
import time


from pxefilterd_harness import dhcp_probe
from tests.integration.verdicts import UNKNOWN, eventually, mac, offered

def test_startup_denies_enrolled_and_unknown(enroll, runner_factory, probe):
    nodes = enroll(2, ports=2)
    runner = runner_factory().start()
    runner.wait_ready()
    macs = [m for _, ms, _ in nodes for m in ms]
    assert offered(probe, macs + [UNKNOWN]) == set()
    assert runner.stop() == 0


def test_inspection_allows_node_and_unknown(enroll, ironic, runner_factory,
                                            probe):
    (a, a_macs, _), (b, b_macs, _) = enroll(2, ports=2)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    assert runner.stop() == 0


def test_deny_unknown_macs(enroll, ironic, runner_factory, probe):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory(
        options={'pxe_filter': {'deny_unknown_macs': True}}).start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=b_macs + [UNKNOWN])
    runner.stop()


def test_abort_denies_again(enroll, ironic, runner_factory, probe):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    ironic.abort(a)
    eventually(probe, allowed=[], denied=a_macs + b_macs + [UNKNOWN])
    runner.stop()


def test_deleted_port_follows_unknown_policy(enroll, ironic, runner_factory,
                                             probe):
    (a, a_macs, _), (b, b_macs, b_ports) = enroll(2)
    runner = runner_factory(
        options={'pxe_filter': {'sync_period': 1}}).start()
    runner.wait_ready()
    ironic.delete_port(b_ports[0])
    ironic.inspect(a)
    # B's MAC is unknown now: allowed while a node is inspected...
    eventually(probe, allowed=a_macs + b_macs, denied=[])
    ironic.abort(a)
    # ... and denied again afterwards, although its file was never deleted
    eventually(probe, allowed=[], denied=a_macs + b_macs)
    assert (runner.hostsdir / b_macs[0]).read_text() == \
        b_macs[0] + ',ignore\n'
    runner.stop()


def test_stale_files_purged_and_dnsmasq_started_after_sync(
        enroll, runner_factory, probe, dnsmasq_instance):
    (a, a_macs, _), = enroll(1)
    hostsdir = dnsmasq_instance.hostsdir
    # a stale allow for an enrolled MAC and garbage from an earlier life
    (hostsdir / a_macs[0]).write_text(a_macs[0] + '\n')
    (hostsdir / 'garbage').write_text(UNKNOWN + '\n')
    (hostsdir / 'unknown_hosts_filter').write_text('*:*:*:*:*:*\n')
    for name in os.listdir(hostsdir):
        os.chmod(hostsdir / name, 0o644)
    runner = runner_factory().start()
    runner.wait_ready()
    assert sorted(os.listdir(hostsdir)) == sorted(
        [a_macs[0], 'unknown_hosts_filter'])
    # dnsmasq's own log shows what it read at start-up: only synced files
    log = dnsmasq_instance.log_text()
    assert 'garbage' not in log
    assert 'read %s/%s' % (hostsdir, a_macs[0]) in log
    assert offered(probe, a_macs + [UNKNOWN]) == set()
    # and the daemon's log shows the order
    text = runner.log_text()
    assert text.index('Purged 3 file(s)') < text.index('Wrote') < \
        text.index('start command')
    runner.stop()


def test_sigterm_stops_dnsmasq(enroll, ironic, runner_factory, probe,
                               dnsmasq_instance):
    (a, a_macs, _), = enroll(1)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[])
    pid = dnsmasq_instance.pid()
    assert runner.stop() == 0
    assert dnsmasq_instance.wait_gone(pid, 5)
    assert offered(probe, a_macs) == set()
    assert 'exiting with status 0: received SIGTERM' in runner.log_text()


def test_sigkill_guard_stops_dnsmasq_within_2s(enroll, ironic,
                                               runner_factory, probe,
                                               dnsmasq_instance):
    (a, a_macs, _), = enroll(1)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs, denied=[])
    pid = dnsmasq_instance.pid()
    killed = time.monotonic()
    runner.kill()
    assert dnsmasq_instance.wait_gone(pid, 2.0), \
        'dnsmasq still running 2 s after SIGKILL of pxefilterd'
    elapsed = time.monotonic() - killed
    assert offered(probe, a_macs) == set()
    print('dnsmasq gone %.3f s after SIGKILL' % elapsed)


def test_ironic_unreachable_at_start(ironic_factory, runner_factory, probe,
                                     dnsmasq_instance):
    ironic = ironic_factory()      # prepared (URL known), not started
    runner = runner_factory(url=ironic.url).start()
    runner.wait_for_log('First sync failed, dnsmasq not started', 60)
    assert not dnsmasq_instance.is_running()
    assert sorted(os.listdir(dnsmasq_instance.hostsdir)) == \
        ['unknown_hosts_filter']
    ironic.start()
    uuid = ironic.create_node('late')
    ironic.create_port(uuid, mac(1))
    other = ironic.create_node('other')
    ironic.create_port(other, mac(2))
    runner.wait_ready(timeout=90)
    ironic.inspect(uuid)
    eventually(probe, allowed=[mac(1), UNKNOWN], denied=[mac(2)])
    runner.stop()


def test_two_inspected_of_twenty(enroll, ironic, runner_factory, probe):
    nodes = enroll(20)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(nodes[3][0])
    ironic.inspect(nodes[11][0])
    allowed = nodes[3][1] + nodes[11][1] + [UNKNOWN]
    denied = [m for i, (_, ms, _) in enumerate(nodes) if i not in (3, 11)
              for m in ms]
    eventually(probe, allowed=allowed, denied=denied)
    runner.stop()


def test_base_hosts_file_layout(enroll, ironic, harness_tmp, runner_factory,
                                probe, dhcp_network):
    """With [dnsmasq_pxe_filter] dhcp_hostsfile, a restart or SIGHUP of
    dnsmasq by someone else at any time still gives the right answers."""
    nodes = enroll(4)
    runner = runner_factory(options={'dnsmasq_pxe_filter': {
        'dhcp_hostsfile': str(harness_tmp / 'dhcp-hostsfile'),
        'compaction_interval': 0}})
    dm = runner.dnsmasq
    with open(dm.conf_path, 'a') as f:
        f.write('dhcp-hostsfile=%s\n' % (harness_tmp / 'dhcp-hostsfile'))
    runner.start()
    runner.wait_ready()
    assert sorted(os.listdir(dm.hostsdir)) == ['unknown_hosts_filter']
    ironic.inspect(nodes[1][0])
    allowed = nodes[1][1] + [UNKNOWN]
    denied = [m for i, (_, ms, _) in enumerate(nodes) if i != 1 for m in ms]
    eventually(probe, allowed=allowed, denied=denied)
    # a per-MAC file overrides the stale base line, also after SIGHUP
    assert nodes[1][1][0] in os.listdir(dm.hostsdir)
    dm.reload()
    time.sleep(0.5)
    eventually(probe, allowed=allowed, denied=denied, timeout=5)
    runner.stop()


def test_guard_after_kill_during_first_sync_of_20000(
        ironic_factory, runner_factory, probe, dnsmasq_instance):
    """kill -9 in the middle of a 20,000-MAC first sync, then restart."""
    big = ironic_factory()
    load = big.bulk_load(20000, 1, '52:54:01')
    big.start()
    first = runner_factory(url=big.url).start()
    hostsdir = dnsmasq_instance.hostsdir
    deadline = time.monotonic() + 60
    while len(os.listdir(hostsdir)) < 2000:
        assert time.monotonic() < deadline, first.log_text()[-2000:]
        time.sleep(0.005)
    first.kill()
    assert not dnsmasq_instance.is_running()
    # no partial file is ever visible: every file holds a complete form
    for name in os.listdir(hostsdir):
        data = (hostsdir / name).read_text()
        assert data in (name + '\n', name + ',ignore\n',
                        '*:*:*:*:*:*\n20-:\n',
                        '*:*:*:*:*:*,ignore\n20-:,ignore\n'), (name, data)
    second = runner_factory(url=big.url).start()
    second.wait_ready(timeout=120)
    assert len(os.listdir(hostsdir)) == 20001
    sample = sorted(load.ports)[::2000]
    assert offered(probe, sample) == set()
    uuid = load.ports[sample[3]]
    big.inspect(uuid)
    eventually(probe, allowed=[sample[3]],
               denied=[m for m in sample if m != sample[3]])
    second.stop()


def test_dhclient_agrees(enroll, ironic, runner_factory, dhcp_network):
    """The real ISC client sees what the raw probe sees."""
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    runner.wait_for_log('Inspection changed for 1 node(s)')
    assert dhcp_probe.dhclient_probe(dhcp_network, a_macs[0]).offer
    assert not dhcp_probe.dhclient_probe(dhcp_network, b_macs[0],
                                         timeout=4).offer
    runner.stop()


def test_sighup_reloads_options_without_restarting_dnsmasq(
        enroll, ironic, runner_factory, probe, dnsmasq_instance):
    (a, a_macs, _), (b, b_macs, _) = enroll(2)
    runner = runner_factory().start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)
    pid = dnsmasq_instance.pid()
    text = runner.conf_path.read_text()
    text = text.replace('[pxe_filter]\n',
                        '[pxe_filter]\ndeny_unknown_macs = True\n')
    text = text.replace('command_timeout = 10', 'command_timeout = 11')
    runner.conf_path.write_text(text)
    runner.proc.send_signal(signal.SIGHUP)
    eventually(probe, allowed=a_macs, denied=b_macs + [UNKNOWN])
    assert dnsmasq_instance.pid() == pid
    log = runner.log_text()
    assert 'SIGHUP: configuration reloaded' in log
    # an immutable option changed on disk is reported, not silently ignored
    assert 'command_timeout' in log and 'immutable' in log
    assert runner.stop() == 0
