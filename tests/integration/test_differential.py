"""The anchor: ironic-pxe-filter and pxefilterd on the same ironic, judged
by DHCP.

ironic 39's own PXE filter (the ``ironic-pxe-filter`` console script of the
ironic venv) and pxefilterd run side by side on ONE real ironic (SQLite,
noauth, fake hardware) and one fleet, each with its own dnsmasq in its own
network namespaces and its own hostsdir, and both read the very same
``[pxe_filter]`` and ``[auto_discovery]`` sections (pxefilterd under
ironic's names: the compatibility this file also proves).
ironic-pxe-filter reads ironic's database directly, so it gets the SQLite
file and a configuration of its own; it runs inside its dnsmasq's server
namespace (it needs no network).  As in kolla-ansible, its dnsmasq is
started on its own, before the filter.

For each state change -- inspection started, pxefilterd's
``deny_unknown_macs`` switched on and off, ports added and deleted,
inspection aborted, inspection finished (the ramdisk's data posted to
``/v1/continue_inspection``), nodes deleted, discovery on and off, a node of
another site inspected -- the test waits until both
hostsdirs say what is expected, then asserts both dnsmasqs' DHCP answers:
the same, except where pxefilterd deliberately differs, each difference
asserted on its own with a comment (the start, the purge, the InfiniBand
client, ``deny_unknown_macs``, the shard).

Latency, from the start of the request that changes ironic (or of the
SIGHUP) until the hostsdir says the new decision (dnsmasq reads a changed
file by inotify within milliseconds), is printed for each filter (see it
with ``pytest -rP``) and written as JSON to
``$PXEFILTERD_DIFFERENTIAL_JSON`` when that is set.  It is never
asserted.

ironic-pxe-filter syncs every 45 s by default; here both read
``sync_period = 2`` (:data:`SYNC_PERIOD`), which keeps the test short and is
what pxefilterd, reading it under the same name, uses for its full listing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pxefilterd_harness import dhcp_probe, ib_probe, preflight
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dnsmasq import DnsmasqInstance
from pxefilterd_harness.ironic import IronicService
from pxefilterd_harness.netns import DhcpNetwork
from tests.integration.verdicts import UNKNOWN

#: ironic-pxe-filter's sync period here (its default: 45 s).  pxefilterd
#: reads the same section: its full listing runs this often too.
SYNC_PERIOD = 2
#: How long the hostsdirs may take to say the expected state: a sync period
#: of each, a restart of ironic-pxe-filter's worker on SIGHUP, a slow CI.
SETTLE_TIMEOUT = 30.0
FAST = {'timeout': 0.6, 'retries': 1}

IRONIC_SIDE, PXF_SIDE = 'ironic-pxe-filter', 'pxefilterd'

#: The fleet, bulk-loaded before anything starts: nodes a, b, c, f, s (of
#: shard site-b; the others are of site-a) and ib, one port each.
A, B, C, F, S, IB_PORT = ('52:54:00:00:00:%02x' % i for i in range(6))
NAMES = ('a', 'b', 'c', 'f', 's', 'ib')
NEW1, NEW2 = '52:54:00:dd:00:01', '52:54:00:dd:00:02'
#: A MAC ironic does not know, allowed by a file that neither filter wrote
#: (a hand-made host reservation left in the hostsdir).
LEFTOVER = '52:54:00:ee:ee:02'
LEFTOVER_FILE = ('leftover-host', '%s,leftover\n' % LEFTOVER)
# Difference (purge), in every state: ironic-pxe-filter never purges the
# hostsdir and judges files by their size alone, so a file it did not
# write stays in force for ever: dnsmasq offers to LEFTOVER even while
# unknown MACs are denied.  pxefilterd purges the hostsdir at start, and
# LEFTOVER is one more unknown MAC.  (kolla-ansible's start script for
# ironic-pxe-filter empties the hostsdir first, and opens the window
# asserted at the start instead.)
ETH = (A, B, C, F, S, NEW1, NEW2, UNKNOWN, LEFTOVER)
IB_CLIENT = ib_probe.ib_client_id('00:02:c9:03:00:0a:0b:00')

LATENCIES: dict[str, dict[str, float | None]] = {}


def filter_sections(hostsdir, discovery=False):
    """The filter sections of an ironic.conf, as both filters read them."""
    return ('[pxe_filter]\n'
            'dhcp_hostsdir = %s\n'
            'sync_period = %d\n'
            'supported_inspect_interfaces = agent\n'
            '[auto_discovery]\n'
            'enabled = %s\n' % (hostsdir, SYNC_PERIOD, discovery))


class IronicPxeFilter:
    """ironic-pxe-filter from the ironic venv, in a network namespace.

    It is a cotyledon master that forks its worker (again at each SIGHUP);
    :meth:`stop` sends SIGTERM to the master, which stops the worker, and
    SIGKILLs both by PID if that takes too long.
    """

    def __init__(self, workdir: Path, ironic: IronicService,
                 network: DhcpNetwork, hostsdir: Path):
        self.conf_path = workdir / 'ironic-pxe-filter.conf'
        self.log_path = workdir / 'ironic-pxe-filter.log'
        self.binary = ironic.venv / 'bin' / 'ironic-pxe-filter'
        self.network = network
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.conf_path.write_text(
            '[DEFAULT]\nhost = pxf-ipf-%d\nrpc_transport = none\n'
            'use_stderr = true\n'
            '[database]\nconnection = sqlite:///%s\n'
            '[oslo_concurrency]\nlock_path = %s\n'
            % (ironic.port, ironic.db_path, ironic.lock_path)
            + filter_sections(hostsdir))

    def start(self):
        self._log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(
            self.network.server_argv([str(self.binary), '--config-file',
                                      str(self.conf_path)]),
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT)

    def reload(self):
        """SIGHUP: oslo.service re-reads the mutable options (mutate) and
        restarts the worker."""
        self.proc.send_signal(signal.SIGHUP)

    def log_tail(self):
        try:
            return self.log_path.read_text(errors='replace')[-3000:]
        except OSError:
            return ''

    def _children(self):
        try:
            with open('/proc/%d/task/%d/children'
                      % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def stop(self):
        if self.proc is None:
            return
        children = self._children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()


def set_option(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def hostsdir_answers(path: Path, macs):
    """What dnsmasq answers each MAC by the files in ``path`` now (True =
    offered): the MAC's own file, else the wildcard file, else offered."""
    def read(name):
        try:
            return (path / name).read_text()
        except OSError:
            return None
    wildcard = read('unknown_hosts_filter')
    result = {}
    for m in macs:
        content = read(m) or wildcard
        result[m] = content is None or not content.strip().endswith(
            ',ignore')
    return result


def probe_both(world, macs):
    """DHCP answers of both dnsmasqs, probed at the same time."""
    results = {}

    def one(side, net):
        try:
            got = dhcp_probe.probe(net, list(macs), **FAST)
            results[side] = {m: got[m].offer for m in macs}
        except Exception as exc:
            results[side] = exc

    threads = [threading.Thread(target=one, args=(side, net))
               for side, net in ((IRONIC_SIDE, world.net_i),
                                 (PXF_SIDE, world.net_p))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for side in (IRONIC_SIDE, PXF_SIDE):
        if not isinstance(results.get(side), dict):
            raise AssertionError('%s: probe failed: %r'
                                 % (side, results.get(side)))
    return results[IRONIC_SIDE], results[PXF_SIDE]


class World:
    """One ironic, its fleet, and both filters with their dnsmasqs."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.ironic = IronicService(tmp / 'ironic')
        self.net_i = DhcpNetwork(prefix='pxdi')
        self.net_p = DhcpNetwork(prefix='pxdp')
        self.hd_i = tmp / 'hostsdir-ironic-pxe-filter'
        self.hd_p = tmp / 'hostsdir-pxefilterd'
        for hd in (self.hd_i, self.hd_p):
            hd.mkdir()
            os.chmod(hd, 0o755)
            (hd / LEFTOVER_FILE[0]).write_text(LEFTOVER_FILE[1])
        self.dns_i = DnsmasqInstance(self.net_i, self.hd_i, tmp / 'dns-i')
        self.dns_p = DnsmasqInstance(self.net_p, self.hd_p, tmp / 'dns-p')
        self.ipf = IronicPxeFilter(tmp, self.ironic, self.net_i, self.hd_i)
        self.pxf = PxefilterdRunner(
            tmp / 'pxefilterd', self.ironic.url, self.dns_p,
            options={'pxe_filter': {'shard': 'site-a',
                                    'deny_unknown_macs': 'False'}})
        # The hostsdir under ironic's name only, from the same sections.
        set_option(self.pxf.conf_path,
                   'dhcp_hostsdir = %s\n' % self.hd_p, '')
        with open(self.pxf.conf_path, 'a') as f:
            f.write(filter_sections(self.hd_p))
        self.expected = {IRONIC_SIDE: None, PXF_SIDE: None}

    def load_fleet(self):
        """Put the fleet in ironic's database (ironic must not run)."""
        load = self.ironic.bulk_load(len(NAMES), 1, '52:54:00:00:00')
        self.nodes = dict(zip(NAMES, load.nodes))
        assert sorted(load.ports) == sorted((A, B, C, F, S, IB_PORT))

    def place_fleet(self):
        """Through the API: the shards, and the IB port's client id."""
        ir = self.ironic
        for name, uuid in self.nodes.items():
            ir.patch_node(uuid, shard='site-b' if name == 's' else 'site-a')
        port, = [p['uuid'] for p in ir.list_ports(('uuid', 'address'))
                 if p['address'] == IB_PORT]
        ir.patch_port(port, extra={'client-id': IB_CLIENT})

    def continue_inspection(self, mac):
        """What the ramdisk does at the end of an inspection: post its
        inventory (lookup by ``mac``); ironic processes it and the node
        goes back to manageable."""
        ir = self.ironic
        ir.headers['X-OpenStack-Ironic-API-Version'] = '1.84'
        try:
            ir.request('POST', '/v1/continue_inspection', {
                'inventory': {
                    'interfaces': [{'name': 'eth0', 'mac_address': mac,
                                    'ipv4_address': '198.51.100.5',
                                    'has_carrier': True}],
                    'cpu': {'architecture': 'x86_64', 'count': 1},
                    'memory': {'physical_mb': 1024},
                    'disks': [{'name': '/dev/vda', 'size': 10 * 2 ** 30}]},
                'boot_interface': mac})
        finally:
            del ir.headers['X-OpenStack-Ironic-API-Version']

    def close(self):
        for step in (self.ipf.stop, self.pxf.close, self.dns_i.stop,
                     self.dns_p.stop, self.net_i.close, self.net_p.close,
                     self.ironic.close):
            try:
                step()
            except Exception as exc:    # go on cleaning up
                print('cleanup: %s: %s' % (step.__qualname__, exc))

    # -- one state change, judged ----------------------------------------

    def change(self, name, action, allowed, differ=None, record=True):
        """Run ``action`` (the event); wait until both hostsdirs say the
        expected answers, recording each one's latency from the start of
        ``action`` (or from the time.monotonic() it returns: when the event
        happened); then assert both dnsmasqs' DHCP answers.

        Both filters must answer ``allowed`` (offered) and deny the rest of
        :data:`ETH`, except the MACs of ``differ`` (``{mac: (ironic-pxe-
        filter's answer, pxefilterd's)}``) and LEFTOVER: always offered by
        ironic-pxe-filter, an unknown MAC to pxefilterd.
        """
        differ = dict(differ or {})
        want = {IRONIC_SIDE: {}, PXF_SIDE: {}}
        for m in ETH:
            i, p = differ.get(m, (m in allowed, m in allowed))
            want[IRONIC_SIDE][m], want[PXF_SIDE][m] = i, p
        want[IRONIC_SIDE][LEFTOVER] = True
        want[PXF_SIDE][LEFTOVER] = want[PXF_SIDE][UNKNOWN]
        if not want[PXF_SIDE][LEFTOVER]:
            differ[LEFTOVER] = (True, False)
        t0 = time.monotonic()
        when = action()
        if isinstance(when, float):
            t0 = when
        paths = {IRONIC_SIDE: self.hd_i, PXF_SIDE: self.hd_p}
        # LEFTOVER's file is not named after it: DHCP judges it below.
        on_disk = {side: {m: v for m, v in w.items() if m != LEFTOVER}
                   for side, w in want.items()}
        latency = {side: None for side in paths
                   if self.expected[side] == want[side]}   # nothing to see
        deadline = t0 + SETTLE_TIMEOUT
        while len(latency) < len(paths):
            now = time.monotonic()
            for side, path in paths.items():
                if side not in latency and hostsdir_answers(
                        path, on_disk[side]) == on_disk[side]:
                    latency[side] = round(now - t0, 3)
            if now > deadline:
                pytest.fail('%s: after %.0f s the hostsdirs say %s, '
                            'expected %s\nironic-pxe-filter log:\n%s' % (
                                name, SETTLE_TIMEOUT,
                                {s: hostsdir_answers(p, on_disk[s])
                                 for s, p in paths.items()},
                                on_disk, self.ipf.log_tail()))
            time.sleep(0.025)
        self.expected = want
        if record:
            LATENCIES[name] = latency
        # DHCP: a lost packet is retried once more before failing.
        for _attempt in range(3):
            got_i, got_p = probe_both(self, ETH)
            if (got_i, got_p) == (want[IRONIC_SIDE], want[PXF_SIDE]):
                break
        assert got_i == want[IRONIC_SIDE], (name, IRONIC_SIDE)
        assert got_p == want[PXF_SIDE], (name, PXF_SIDE)
        # ... and where no difference is declared, they agree.
        assert {m for m in ETH if got_i[m] != got_p[m]} == set(differ)


@pytest.fixture(scope='module')
def world():
    """Everything started but pxefilterd: ironic with the fleet, and
    ironic-pxe-filter beside its dnsmasq.  ironic-pxe-filter reads the
    database, not the API: it starts while ironic does (both take seconds
    to import), which keeps the test short."""
    for problem in (preflight.ironic_problem(),
                    preflight.dhcp_problem(need_dhclient=False)):
        if problem:
            pytest.skip(problem)
    binary = preflight.ironic_venv() / 'bin' / 'ironic-pxe-filter'
    if not binary.exists():
        pytest.skip('%s not found (ironic older than 2024?)' % binary)
    tmp = Path(tempfile.mkdtemp(prefix='pxf-diff-'))
    os.chmod(tmp, 0o755)
    w = None
    try:
        w = World(tmp)
        w.ironic.prepare()
        w.load_fleet()
        # ironic-pxe-filter does not start dnsmasq: it runs beside one
        # started on its own (kolla-ansible's ironic_dnsmasq container).
        w.dns_i.start()
        # Until the filter's first sync, that dnsmasq serves a hostsdir
        # without the wildcard file (asserted in the test).
        w.before_first_sync = dhcp_probe.probe(w.net_i, [B, UNKNOWN],
                                               **FAST)
        w.ipf_started = time.time()
        w.ipf.start()
        w.ironic.start()
        w.place_fleet()
        yield w
    finally:
        if w is not None:
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)


def report_latencies():
    """Print the latencies; write them to $PXEFILTERD_DIFFERENTIAL_JSON
    when set."""
    print('\nlatency from the event to the new decision in the hostsdir '
          '(s; "-": no change for that filter)')
    print('%-50s %18s %12s' % ('event', IRONIC_SIDE, PXF_SIDE))
    for name, lat in LATENCIES.items():
        print('%-50s %18s %12s' % (name, *(
            '-' if lat.get(s) is None else '%.2f' % lat[s]
            for s in (IRONIC_SIDE, PXF_SIDE))))
    path = os.environ.get('PXEFILTERD_DIFFERENTIAL_JSON')
    if path:
        with open(path, 'w') as f:
            json.dump({'sync_period': SYNC_PERIOD, 'latency_s': LATENCIES},
                      f, indent=1)
            f.write('\n')


def test_same_dhcp_answers_as_ironic_pxe_filter(world):
    try:
        run_the_sequence(world)
    finally:
        # In the test's output: shown on failure, and with pytest -rP.
        if LATENCIES:
            report_latencies()


def run_the_sequence(w):
    ir, n = w.ironic, w.nodes

    # -- start ---------------------------------------------------------------
    # Difference (start): until ironic-pxe-filter's first sync (1 s after
    # its start, once ironic is imported) its hostsdir has no wildcard file,
    # and dnsmasq offers to every MAC -- B, which ironic knows and does not
    # inspect, included (probed by the fixture).  pxefilterd starts its
    # dnsmasq only once its hostsdir says the result of its first sync: it
    # never serves before.
    assert {m: o.offer for m, o in w.before_first_sync.items()} == {
        B: True, UNKNOWN: True}
    started = {}
    t0 = time.monotonic()
    w.pxf.start()
    # Probed all along, from pxefilterd's start until its dnsmasq runs (the
    # first sync done): no answer to anyone at any moment.
    while True:
        running, seen = w.dns_p.is_running(), time.monotonic()
        answers = dhcp_probe.probe(w.net_p, [B, UNKNOWN], **FAST)
        assert {m: o.offer for m, o in answers.items()} == {
            B: False, UNKNOWN: False}
        if running:
            break
        assert time.monotonic() - t0 < 90, w.pxf.log_text()[-3000:]
    # fail closed: the hostsdir was complete before dnsmasq ran
    assert hostsdir_answers(w.hd_p, [A, B, UNKNOWN]) == {
        A: False, B: False, UNKNOWN: False}
    started[PXF_SIDE] = round(seen - t0, 3)
    w.pxf.wait_ready()
    wildcard = w.hd_i / 'unknown_hosts_filter'
    while not wildcard.exists():
        assert time.monotonic() - t0 < 90, w.ipf.log_tail()
        time.sleep(0.05)
    started[IRONIC_SIDE] = round(wildcard.stat().st_mtime - w.ipf_started, 3)
    # (from each process's start; ironic-pxe-filter serves everyone until)
    LATENCIES['start, to the first sync'] = started
    # pxefilterd purged the hostsdir at start; ironic-pxe-filter left it.
    assert not (w.hd_p / LEFTOVER_FILE[0]).exists()
    assert (w.hd_i / LEFTOVER_FILE[0]).read_text() == LEFTOVER_FILE[1]
    w.change('synced', lambda: None, allowed=[], record=False)
    # Difference (InfiniBand): an IPoIB client sends no MAC (hardware
    # address length 0) but a client id, which ironic keeps in the port's
    # extra['client-id'].  ironic-pxe-filter writes only the port's address,
    # a record dnsmasq never matches to such a client -- nor does its
    # wildcard -- so dnsmasq offers to every IB client, denied or not.
    # pxefilterd writes the client id: the node is not inspected, denied.
    ib = {side: ib_probe.probe(net, [IB_CLIENT], **FAST)[IB_CLIENT].offer
          for side, net in ((IRONIC_SIDE, w.net_i), (PXF_SIDE, w.net_p))}
    assert ib == {IRONIC_SIDE: True, PXF_SIDE: False}

    # -- inspection, ports ---------------------------------------------------
    # A MAC ironic does not know may boot while a node is inspected (its
    # ports may not be enrolled yet): both filters agree.
    unknown = [UNKNOWN, NEW1, NEW2]
    w.change('inspection started', lambda: ir.inspect(n['a']),
             allowed=[A] + unknown)
    # Difference (deny_unknown_macs, pxefilterd only): ironic-pxe-filter
    # has no way to deny unknown MACs during an inspection.
    set_option(w.pxf.conf_path, 'deny_unknown_macs = False',
               'deny_unknown_macs = True')
    w.change('pxefilterd: deny_unknown_macs on (SIGHUP)',
             lambda: w.pxf.proc.send_signal(signal.SIGHUP), allowed=[A],
             differ={m: (True, False) for m in unknown})
    set_option(w.pxf.conf_path, 'deny_unknown_macs = True',
               'deny_unknown_macs = False')
    w.change('pxefilterd: deny_unknown_macs off (SIGHUP)',
             lambda: w.pxf.proc.send_signal(signal.SIGHUP),
             allowed=[A] + unknown)
    ports = {}

    def add_ports():
        ports[NEW1] = ir.create_port(n['a'], NEW1)
        ports[NEW2] = ir.create_port(n['b'], NEW2)

    w.change('ports added (to the inspected node, to another)', add_ports,
             allowed=[A, NEW1, UNKNOWN])
    w.change('ports deleted (from both)',
             lambda: [ir.delete_port(p) for p in ports.values()],
             allowed=[A] + unknown)
    w.change('inspection aborted', lambda: ir.abort(n['a']), allowed=[])

    # -- inspection finished: the ramdisk posts its data -----------------
    w.change('inspection started (node b)', lambda: ir.inspect(n['b']),
             allowed=[B] + unknown)

    def finished():
        """Post the data; return when the node was seen manageable."""
        w.continue_inspection(B)
        deadline = time.monotonic() + 30
        while ir.provision_state(n['b']) != 'manageable':
            assert time.monotonic() < deadline, ir.node(n['b'])
            time.sleep(0.05)
        return time.monotonic()

    w.change('inspection finished (manageable again)', finished,
             allowed=[])

    # -- nodes deleted -----------------------------------------------------
    w.change('inspection started (node c)', lambda: ir.inspect(n['c']),
             allowed=[C] + unknown)

    def delete_nodes():
        ir.force_delete_node(n['c'])     # under inspection
        ir.delete_node(n['f'])           # not inspected

    # Their MACs are unknown now, and nothing is inspected: denied.
    w.change('nodes deleted (one inspected, one not)', delete_nodes,
             allowed=[])

    # -- discovery: ironic's [auto_discovery] enabled, read by both ----------
    def discovery(on):
        for path in (w.ipf.conf_path, w.pxf.conf_path):
            set_option(path, 'enabled = %s' % (not on), 'enabled = %s' % on)
        w.ipf.reload()
        w.pxf.proc.send_signal(signal.SIGHUP)

    # Every MAC ironic does not know may boot, the deleted nodes' too.
    w.change('discovery on (SIGHUP)', lambda: discovery(True),
             allowed=unknown + [C, F])
    w.change('discovery off (SIGHUP)', lambda: discovery(False), allowed=[])

    # -- scope -------------------------------------------------------------
    # Difference (scope): pxefilterd serves the shard site-a only
    # ([pxe_filter] shard, one filter per site); ironic-pxe-filter has no
    # scope and lets every inspected node boot from its dnsmasq, s of
    # site-b included, and with it every unknown MAC.
    w.change('inspection started (node of another shard)',
             lambda: ir.inspect(n['s']), allowed=[],
             differ={m: (True, False) for m in [S, C, F] + unknown})

    assert w.pxf.stop() == 0
