"""The README's five-minute path, run verbatim on Debian 12 with systemd as
PID 1, and what an operator relies on from the shipped units afterwards.

The guest is a cached debootstrapped Debian 12 root (tools/guest-root.sh)
booted by systemd-nspawn in the server namespace of a DhcpNetwork: dnsmasq
answers on its veth, the raw DHCP probe asks from the client namespace, and
the test's real ironic (on the host's 127.0.0.1) is relayed to 127.0.0.1
inside.  The guest has no other network.

Test substitutions, and only these (marked TEST SUBSTITUTION below):
- each ``$EDITOR FILE`` line is replaced by writing the test's settings
  into FILE (ironic's URL without keystone; dnsmasq's interface and range);
- ``pip`` finds its packages in a directory of wheels built on the host from
  pins/guest.txt (``PIP_NO_INDEX``, ``PIP_FIND_LINKS`` in the environment);
- for the watchdog check, a drop-in lowers ``WatchdogSec`` to keep it short.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from pxefilterd_harness import dhcp_probe, ironic as ironic_mod
from tests.integration import systemd_guest
from tests.integration.verdicts import UNKNOWN, mac

UNIT = 'pxefilterd.service'
DNSMASQ = 'pxefilterd-dnsmasq.service'
CONF = '/etc/pxefilterd/pxefilterd.conf'
WHEELS = '/var/cache/pxefilterd-wheels'
# TEST SUBSTITUTION: pip's index is a directory of wheels (no network).
PIP_OFFLINE = {'PIP_NO_INDEX': '1', 'PIP_FIND_LINKS': WHEELS}
WATCHDOG_SEC = 4
OPERATOR = 'alice'


def _skip_unless_possible():
    missing = [t for t in ('systemd-nspawn', 'debootstrap', 'nsenter')
               if shutil.which(t) is None]
    if missing:
        pytest.skip('needs %s (Debian packages systemd-container, '
                    'debootstrap)' % ', '.join(missing))


def _edit_pxefilterd_conf(text, ironic_url):
    """What the operator does in $EDITOR: [ironic] without keystone."""
    out, section = [], None
    for line in text.splitlines():
        m = re.match(r'^\[(\w+)\]', line)
        if m:
            section = m.group(1)
            out.append(line)
            if section == 'ironic':
                out += ['auth_type = none',
                        'endpoint_override = %s' % ironic_url]
            elif section == 'pxe_filter':
                out += ['inspection_poll_interval = 0.5']
            continue
        if section == 'ironic' and re.match(r'^\w', line):
            line = '#' + line
        out.append(line)
    return '\n'.join(out) + '\n'


def _edit_dnsmasq_conf(text, net):
    out = []
    for line in text.splitlines():
        if line.startswith('interface='):
            line = 'interface=%s' % net.server_iface
        elif line.startswith('dhcp-range='):
            line = 'dhcp-range=198.51.100.100,198.51.100.200,255.255.255.0,10m'
        out.append(line)
    return '\n'.join(out) + '\n'


def _offered(net, macs):
    result = dhcp_probe.probe(net, list(macs), timeout=1.0, retries=2)
    return {m for m in macs if result[m].offer}


def _eventually_offered(net, allowed, denied, timeout=20.0):
    allowed, denied = set(allowed), set(denied)
    deadline = time.monotonic() + timeout
    while True:
        got = _offered(net, allowed | denied)
        if got == allowed:
            return
        if time.monotonic() > deadline:
            pytest.fail('offers to %s, expected exactly %s'
                        % (sorted(got), sorted(allowed)))
        time.sleep(0.3)


def _wait(what, predicate, timeout=30.0, interval=0.2):
    """Wait until predicate() is true; return the seconds it took."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail('after %.0f s: %s' % (timeout, what))
        time.sleep(interval)
    return time.monotonic() - t0


def _signal_tree(pid, sig):
    for child, _ in ironic_mod._descendants(pid):
        os.kill(child, sig)
    os.kill(pid, sig)


@pytest.fixture
def guest(dhcp_network, harness_tmp):
    _skip_unless_possible()
    t0 = time.monotonic()
    root = systemd_guest.guest_root()
    wheels = systemd_guest.guest_wheels()
    checkout = systemd_guest.build_checkout(harness_tmp / 'checkout')
    t1 = time.monotonic()
    g = systemd_guest.Guest(
        root, dhcp_network.server_ns,
        {str(checkout): '/root/pxefilterd', str(wheels): WHEELS},
        log=harness_tmp / 'nspawn.log')
    print('guest: root and wheels ready in %.1f s, booted in %.1f s'
          % (t1 - t0, time.monotonic() - t1))
    try:
        yield g
    finally:
        journal = g.journal(UNIT, DNSMASQ)
        print('---- guest journal (pxefilterd, dnsmasq), last lines:')
        print('\n'.join(journal.splitlines()[-60:]))
        g.close()


def test_readme_five_minute_path_under_systemd(guest, ironic, dhcp_network):
    net = dhcp_network
    times = {}
    # Node a is inspected (may boot), b is not (denied), c is inspected
    # and then aborted (denied from then on).
    nodes = {}
    for i, name in enumerate('abc'):
        uuid = ironic.create_node('sd-%s' % name)
        ironic.create_port(uuid, mac(i))
        nodes[name] = uuid
    ironic.inspect(nodes['a'])
    ironic.inspect(nodes['c'])
    relay = systemd_guest.NetnsRelay(net.server_ns, ironic.port)
    try:
        _run_readme(guest, ironic, relay, net, times)
        _check_dhcp(guest, ironic, net, nodes, times)
        _check_reload(guest, net)
        _check_dnsmasq_killed(guest, net, times)
        _check_kill_9(guest, net, times)
        _check_watchdog(guest, ironic, net, times)
        _check_operator(guest)
        _check_stop(guest)
        _check_config_error(guest)
    finally:
        relay.close()
        print('measured: ' + ', '.join('%s %.1f s' % kv
                                       for kv in times.items()))


def _run_readme(guest, ironic, relay, net, times):
    """Every line of the README's block, in order, each one checked."""
    lines = systemd_guest.five_minute_path()
    # An operator's account, as on any real host (the README may add it to
    # the group that may use the control socket).
    guest.run('useradd --no-create-home %s' % OPERATOR)
    enable = [i for i, c in enumerate(lines)
              if c.startswith('systemctl enable --now')]
    assert enable, 'the README no longer starts pxefilterd.service'
    for i, command in enumerate(lines):
        target = systemd_guest.editor_target(command)
        t0 = time.monotonic()
        if target is not None:
            # TEST SUBSTITUTION: $EDITOR -> the test's settings.
            text = guest.read(target)
            if target.endswith('pxefilterd.conf'):
                text = _edit_pxefilterd_conf(text, 'http://127.0.0.1:%d'
                                             % ironic.port)
            elif target.endswith('dnsmasq.conf'):
                text = _edit_dnsmasq_conf(text, net)
            else:
                pytest.fail('README edits %s: the test does not know what '
                            'to write there' % target)
            guest.write(target, text)
            continue
        if i == enable[0]:
            _enable_now(guest, relay, command, times)
            continue
        res = guest.run(command, cwd='/root/pxefilterd', env=PIP_OFFLINE,
                        timeout=600)
        elapsed = time.monotonic() - t0
        if elapsed > 5:
            times[command.split()[0].rsplit('/', 1)[-1]] = elapsed
        if 'check-config' in command:
            assert 'configuration OK' in res.stdout, res.stdout
            print(res.stdout)
            _check_config_asks_sudo(guest, command)
        if command.endswith(' status'):
            print(res.stdout)
            assert 'dnsmasq' in res.stdout


def _check_config_asks_sudo(guest, command):
    """check-config (as root) sees a sudoers rule that names the program
    where it is not (the README's rule before it was fixed)."""
    rule = guest.read('/etc/sudoers.d/pxefilterd')
    assert '/usr/local/bin/pxefilterd-rootwrap' in rule
    guest.write('/etc/sudoers.d/pxefilterd', rule.replace(
        '/usr/local/bin/pxefilterd-rootwrap', '/usr/bin/pxefilterd-rootwrap'))
    try:
        res = guest.run(command, check=False)
    finally:
        guest.write('/etc/sudoers.d/pxefilterd', rule)
    assert res.returncode == 1, res.stdout
    assert ('environment: [dnsmasq_pxe_filter] dnsmasq_start_command: '
            'pxefilterd may not run "sudo pxefilterd-rootwrap '
            '/etc/pxefilterd/rootwrap.conf systemctl --no-block start '
            'pxefilterd-dnsmasq.service"') in res.stdout, res.stdout


def _enable_now(guest, relay, command, times):
    """``systemctl enable --now``: ironic refuses at first; the unit must
    stay activating (and dnsmasq stopped) until the first sync."""
    relay.refuse = True
    t0 = time.monotonic()
    proc = subprocess.Popen(guest.argv('cd /root/pxefilterd && ' + command),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        _wait('pxefilterd.service activating',
              lambda: guest.show(UNIT, 'ActiveState') == 'activating')
        # The first sync retries; READY must wait for it.
        for _ in range(10):
            assert guest.show(UNIT, 'ActiveState') == 'activating'
            assert guest.show(DNSMASQ, 'ActiveState') == 'inactive'
            time.sleep(0.5)
        assert proc.poll() is None, 'systemctl returned before READY'
        released = time.monotonic()
        relay.refuse = False
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    times['enable --now, start to active (ironic refused ~5 s)'] = (
        time.monotonic() - t0)
    times['enable --now, ironic up to active'] = time.monotonic() - released
    assert guest.show(UNIT, 'ActiveState') == 'active'
    times['dnsmasq running after active'] = _wait(
        'dnsmasq active', lambda: guest.show(DNSMASQ, 'ActiveState')
        == 'active', timeout=15)
    # Active only after ironic answered, with the hostsdir already saying
    # what ironic says (the first sync), and after the start command ran.
    # Timestamps, not the journal's order: pxefilterd's own lines come
    # through a stream and may be stored after systemd's "Started".
    active = int(guest.show(UNIT, 'ActiveEnterTimestampMonotonic')) / 1e6
    assert active > released      # the same CLOCK_MONOTONIC in the guest
    assert guest.read('/var/lib/pxefilterd/dhcp-hostsdir/%s' % mac(0)
                      ).strip() == mac(0)
    sudo = [line for line in guest.journal(UNIT).splitlines()
            if 'COMMAND=/usr/local/bin/pxefilterd-rootwrap' in line
            and '--no-block start pxefilterd-dnsmasq.service' in line]
    assert sudo, guest.journal(UNIT)[-3000:]
    assert float(sudo[0].split(']')[0].strip('[ ')) < active, sudo[0]


def _check_dhcp(guest, ironic, net, nodes, times):
    _eventually_offered(net, [mac(0), mac(2), UNKNOWN], [mac(1)])
    ironic.abort(nodes['c'])
    t0 = time.monotonic()
    _eventually_offered(net, [mac(0), UNKNOWN], [mac(1), mac(2)])
    times['abort to ignored'] = time.monotonic() - t0


def _check_reload(guest, net):
    dnsmasq_pid = guest.main_pid(DNSMASQ)
    daemon_pid = guest.main_pid(UNIT)
    text = guest.read(CONF).replace(
        '#deny_unknown_macs = false', 'deny_unknown_macs = true')
    assert 'deny_unknown_macs = true' in text
    guest.write(CONF, text)
    guest.run('systemctl reload pxefilterd')
    _eventually_offered(net, [mac(0)], [mac(1), UNKNOWN])
    assert guest.main_pid(DNSMASQ) == dnsmasq_pid
    assert guest.main_pid(UNIT) == daemon_pid


def _check_dnsmasq_killed(guest, net, times):
    daemon_pid = guest.main_pid(UNIT)
    old = guest.main_pid(DNSMASQ)
    guest.run('kill -9 %d' % old)
    t0 = time.monotonic()
    _wait('dnsmasq started again through its unit',
          lambda: guest.main_pid(DNSMASQ) not in (0, old), timeout=30)
    _eventually_offered(net, [mac(0)], [mac(1), UNKNOWN])
    times['dnsmasq killed to answering'] = time.monotonic() - t0
    assert guest.main_pid(UNIT) == daemon_pid
    assert 'dnsmasq is not running' in guest.journal(UNIT)


def _check_kill_9(guest, net, times):
    daemon, dnsmasq = guest.main_pid(UNIT), guest.main_pid(DNSMASQ)
    restarts = int(guest.show(UNIT, 'NRestarts'))
    guest.run('kill -9 %d' % daemon)
    t0 = time.monotonic()
    # The guard (or BindsTo=) stops dnsmasq: nothing serves a stale list.
    times['kill -9 to dnsmasq stopped'] = _wait(
        'dnsmasq stopped after pxefilterd was killed',
        lambda: guest.run('kill -0 %d' % dnsmasq, check=False).returncode,
        timeout=15)
    # Restart=on-failure brings the pair back.
    _wait('pxefilterd restarted', lambda: (
        guest.show(UNIT, 'ActiveState') == 'active'
        and guest.main_pid(UNIT) not in (0, daemon)), timeout=60)
    _wait('dnsmasq back', lambda: guest.main_pid(DNSMASQ) not in (0, dnsmasq),
          timeout=30)
    _eventually_offered(net, [mac(0)], [mac(1), UNKNOWN])
    times['kill -9 to answering again'] = time.monotonic() - t0
    assert int(guest.show(UNIT, 'NRestarts')) == restarts + 1


def _check_watchdog(guest, ironic, net, times):
    # TEST SUBSTITUTION: a shorter watchdog, so that freezing ironic for
    # longer than it takes seconds, not minutes.
    guest.run('mkdir -p /etc/systemd/system/pxefilterd.service.d && '
              'printf "[Service]\\nWatchdogSec=%d\\n" > '
              '/etc/systemd/system/pxefilterd.service.d/zz-test-watchdog.conf'
              ' && systemctl daemon-reload && systemctl restart pxefilterd'
              % WATCHDOG_SEC, timeout=120)
    assert guest.show(UNIT, 'WatchdogUSec') == '%ds' % WATCHDOG_SEC
    _eventually_offered(net, [mac(0)], [mac(1), UNKNOWN])
    daemon = guest.main_pid(UNIT)
    restarts = int(guest.show(UNIT, 'NRestarts'))
    _signal_tree(ironic.pid, signal.SIGSTOP)
    try:
        time.sleep(3 * WATCHDOG_SEC)
        assert guest.main_pid(UNIT) == daemon
        assert guest.show(UNIT, 'ActiveState') == 'active'
        assert int(guest.show(UNIT, 'NRestarts')) == restarts
        # dnsmasq keeps serving what was decided
        assert _offered(net, [mac(0), mac(1)]) == {mac(0)}
    finally:
        _signal_tree(ironic.pid, signal.SIGCONT)
    assert 'Watchdog timeout' not in guest.journal(UNIT)
    times['ironic frozen, watchdog %d s' % WATCHDOG_SEC] = 3 * WATCHDOG_SEC


def _check_operator(guest):
    """An operator (not root, not the daemon's user) asks the daemon, as
    the README says: ``pxefilterd-ctl status`` and ``explain``."""
    # Who may: the group of the control socket.
    group = guest.run('stat -c %G /run/pxefilterd/control.sock').stdout
    guest.run('usermod -a -G %s %s' % (group.strip(), OPERATOR))
    status = guest.run('pxefilterd-ctl status', user=OPERATOR).stdout
    print(status)
    assert 'daemon says:' in status, status
    explain = guest.run('pxefilterd-ctl explain %s' % mac(0),
                        user=OPERATOR).stdout
    print(explain)
    assert 'the running daemon' in explain, explain
    assert 'decision:  allow (rule inspected)' in explain, explain


def _check_stop(guest):
    dnsmasq = guest.main_pid(DNSMASQ)
    guest.run('systemctl stop pxefilterd', timeout=90)
    assert guest.show(UNIT, 'ActiveState') == 'inactive'
    assert guest.show(DNSMASQ, 'ActiveState') == 'inactive'
    assert guest.run('kill -0 %d' % dnsmasq, check=False).returncode != 0


def _check_config_error(guest):
    text = guest.read(CONF).replace(
        '#sync_period = 900', 'sync_period = soon')
    assert 'sync_period = soon' in text
    guest.write(CONF, text)
    res = guest.run('systemctl start pxefilterd', check=False, timeout=90)
    assert res.returncode != 0
    time.sleep(8)       # longer than RestartSec=5: no restart comes
    assert guest.show(UNIT, 'ExecMainStatus') == '78'
    assert guest.show(UNIT, 'ActiveState') == 'failed'
    assert guest.show(UNIT, 'NRestarts') == '0'
    assert guest.show(DNSMASQ, 'ActiveState') == 'inactive'
    assert 'configuration error' in guest.journal(UNIT)
