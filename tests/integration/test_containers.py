"""The container images of container/Containerfile, built and run with
podman: the all-in-one image (dnsmasq a child of pxefilterd) and the
kolla-style sidecar (pxefilterd, and dnsmasq in a container of its own in
pxefilterd's pid namespace, sharing the hostsdir volume).

Each serves DHCP right in the test's server namespace (the containers join
it), from a real ironic reached through a relay; its health check passes;
and stopping or killing the pxefilterd container stops DHCP within 2 s.

podman as measured on this machine kind (doc/source/containers.md): runc,
lowered ulimits, and no registry: the Containerfile's FROM image is a
debootstrapped Debian 12 root imported by tools/container-base.sh, and the
Python dependencies come from the wheels of the pins built on the host
(tools/guest-root.sh wheels), so the build needs only the Debian mirror.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pxefilterd_harness import dhcp_probe, preflight
from pxefilterd_harness.dnsmasq import BOOT_FILE
from pxefilterd_harness.ironic import IronicService
from pxefilterd_harness.netns import RANGE_END, RANGE_START
from tests.integration import systemd_guest
from tests.integration.verdicts import UNKNOWN, eventually, mac

REPO = Path(__file__).resolve().parents[2]
PODMAN = ['podman', '--runtime', 'runc']
RUN_LIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000']
IMAGE = 'localhost/pxefilterd-test:%s'
#: the behaviour bound from the issue
STOP_BOUND = 2.0
A, B = mac(0), mac(1)


def podman(*args, timeout=120.0, check=True):
    res = subprocess.run(PODMAN + list(args), capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError('podman %s exited %d:\n%s%s' % (
            ' '.join(args[:3]), res.returncode, res.stdout[-2000:],
            res.stderr[-3000:]))
    return res


@pytest.fixture(scope='module')
def images():
    """Build the three targets (the base image imported first); print the
    time each build took."""
    problem = preflight.root_problem()
    if problem:
        pytest.skip(problem)
    for tool in ('podman', 'runc'):
        if shutil.which(tool) is None:
            pytest.skip('%s not found (tools/setup.sh installs it)' % tool)
    started = time.monotonic()
    res = subprocess.run(['bash', str(REPO / 'tools' / 'container-base.sh')],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    wheels = systemd_guest.guest_wheels()
    print('base image and wheels ready in %.1f s'
          % (time.monotonic() - started))
    version = subprocess.run(
        [sys.executable, 'setup.py', '--version'], cwd=REPO,
        capture_output=True, text=True, timeout=120,
        check=True).stdout.split()[-1]
    for target in ('all-in-one', 'sidecar', 'dnsmasq'):
        started = time.monotonic()
        podman('build', '--format', 'docker', *RUN_LIMITS,
               '-f', str(REPO / 'container' / 'Containerfile'),
               '--target', target, '--volume', '%s:/wheels:ro' % wheels,
               '--build-arg', 'PIP_WHEELS=/wheels',
               '--build-arg', 'PXEFILTERD_VERSION=%s' % version,
               '-t', IMAGE % target, str(REPO), timeout=1800)
        print('image %s built in %.1f s'
              % (target, time.monotonic() - started))
    return {t: IMAGE % t for t in ('all-in-one', 'sidecar', 'dnsmasq')}


@pytest.fixture(scope='module')
def fleet():
    """One real ironic for the file: node 0 in inspection (its MAC A may
    boot, and so may unknown MACs), node 1 not (B is denied)."""
    problem = preflight.ironic_problem()
    if problem:
        pytest.skip(problem)
    workdir = tempfile.mkdtemp(prefix='pxf-it-containers-')
    svc = IronicService(Path(workdir) / 'ironic')
    try:
        svc.prepare()
        svc.start()
        inspected = svc.create_node('node-0')
        svc.create_port(inspected, A)
        svc.create_port(svc.create_node('node-1'), B)
        svc.inspect(inspected)
        yield svc
    finally:
        svc.close()
        shutil.rmtree(workdir, ignore_errors=True)


class Site:
    """The files one container layout mounts, and its containers."""

    def __init__(self, root: Path, network, ironic_url: str):
        self.root = root
        self.network = network
        self.names: list[str] = []
        self.etc = root / 'etc'
        self.etc.mkdir()
        (self.etc / 'pxefilterd.conf').write_text(
            '[pxe_filter]\ninspection_poll_interval = 1\n'
            '[ironic]\nauth_type = none\nendpoint_override = %s\n'
            'timeout = 5\napi_retries = 1\napi_retry_interval = 0.2\n'
            % ironic_url)
        lines = (
            'interface=%s' % network.server_iface, 'bind-interfaces',
            'except-interface=lo', 'port=0', 'no-resolv', 'no-hosts',
            'dhcp-range=%s,%s,255.255.255.0,2m' % (RANGE_START, RANGE_END),
            'dhcp-boot=%s' % BOOT_FILE, 'no-ping', 'log-dhcp',
            'dhcp-leasefile=/tmp/dnsmasq.leases')
        (self.etc / 'dnsmasq.conf').write_text(
            ''.join('%s\n' % line for line in lines))

    def hostsdir_in_conf(self) -> None:
        """For the dnsmasq image (the all-in-one's child command names
        the hostsdir itself)."""
        with open(self.etc / 'dnsmasq.conf', 'a') as f:
            f.write('dhcp-hostsdir=/var/lib/pxefilterd/dhcp-hostsdir\n')

    def run(self, name: str, image: str, *args: str) -> str:
        name = '%s-%d' % (name, os.getpid())
        self.names.append(name)
        podman('run', '-d', '--name', name, *RUN_LIMITS,
               '--network', 'ns:/run/netns/%s' % self.network.server_ns,
               '--cap-add', 'NET_ADMIN,NET_RAW',
               '-v', '%s:/etc/pxefilterd:ro' % self.etc, *args, image)
        return name

    def logs(self) -> str:
        out = []
        for name in self.names:
            res = podman('logs', name, check=False)
            out.append('--- %s\n%s%s' % (name, res.stdout[-2000:],
                                         res.stderr[-3000:]))
        return '\n'.join(out)

    def close(self) -> None:
        for name in reversed(self.names):
            podman('rm', '-f', '-t', '0', name, check=False)


@pytest.fixture
def site(fleet, dhcp_network):
    from tests.integration.systemd_guest import NetnsRelay
    relay = NetnsRelay(dhcp_network.server_ns, fleet.port)
    root = Path(tempfile.mkdtemp(prefix='pxf-it-site-'))
    os.chmod(root, 0o755)
    s = Site(root, dhcp_network, 'http://127.0.0.1:%d' % fleet.port)
    try:
        yield s
    finally:
        s.close()
        relay.close()
        shutil.rmtree(root, ignore_errors=True)


def logs_of(name: str) -> str:
    res = podman('logs', name)
    return res.stdout + res.stderr


def healthy(name: str) -> tuple[int, str]:
    res = podman('healthcheck', 'run', name, check=False, timeout=30)
    return res.returncode, res.stdout + res.stderr


#: unanswered probes in a row that make a silence (a probe can go
#: unanswered while dnsmasq still serves: a lost packet, a busy moment)
SILENT_PROBES = 4


def dhcp_stops_within(network, *args: str) -> float:
    """Run ``podman ARGS`` (a stop or a kill) in the background and probe A
    with single short DISCOVERs meanwhile; return the seconds from the
    command's start to the start of the silence that follows: every probe
    unanswered from then on, at least SILENT_PROBES of them and until half
    a second past STOP_BOUND, so that an offer after a lone unanswered
    probe cannot pass for a stop within the bound."""
    started = time.monotonic()
    command = subprocess.Popen(PODMAN + list(args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    silent_since, silent = None, 0
    try:
        while True:
            got = dhcp_probe.probe(network, [A], timeout=0.2, retries=0)
            elapsed = time.monotonic() - started
            if got[A].offer:
                silent_since, silent = None, 0
            else:
                if silent_since is None:
                    silent_since = elapsed
                silent += 1
                if silent >= SILENT_PROBES and elapsed > STOP_BOUND + 0.5:
                    return silent_since
            assert elapsed < STOP_BOUND + 5.0, \
                'DHCP still answered %.2f s after podman %s' % (
                    elapsed, ' '.join(args))
    finally:
        _, err = command.communicate(timeout=60)
        assert command.returncode == 0, err


def test_all_in_one(images, site, probe):
    name = site.run('pxf-aio', images['all-in-one'])
    try:
        eventually(probe, allowed=[A, UNKNOWN], denied=[B], timeout=60)
    except BaseException:
        print(site.logs())
        raise
    code, out = healthy(name)
    assert code == 0, out + site.logs()
    top = podman('top', name, 'pid', 'ppid', 'comm').stdout
    assert 'dnsmasq' in top and 'pxefilterd' in top, top
    # SIGKILL of the container (its init): nothing of it may go on serving
    took = dhcp_stops_within(site.network, 'kill', '-s', 'KILL', name)
    print('all-in-one: DHCP stopped %.2f s after podman kill -s KILL' % took)
    assert took <= STOP_BOUND
    eventually(probe, allowed=[], denied=[A, UNKNOWN], timeout=5)
    # run again, then a clean stop
    podman('rm', '-f', name)
    site.names.remove(name)
    name = site.run('pxf-aio2', images['all-in-one'])
    eventually(probe, allowed=[A, UNKNOWN], denied=[B], timeout=60)
    took = dhcp_stops_within(site.network, 'stop', '-t', '10', name)
    print('all-in-one: DHCP stopped %.2f s after podman stop' % took)
    assert took <= STOP_BOUND
    logs = logs_of(name)
    assert 'pxefilterd exiting with status 0: received SIGTERM' in logs, logs


def start_sidecar(site, images, name, lib, run):
    """Start the sidecar pair as kolla would: pxefilterd first, with the
    hostsdir volume *lib*; once it has written the fail-closed state,
    dnsmasq in its pid namespace, the hostsdir read-only and the pid file
    on *run*.  Return both container names."""
    pxf = site.run(name, images['sidecar'],
                   '-v', '%s:/var/lib/pxefilterd' % lib,
                   '-v', '%s:/run/pxefilterd-dnsmasq:ro' % run)
    deadline = time.monotonic() + 60
    while 'fail-closed state' not in logs_of(pxf):
        assert time.monotonic() < deadline, site.logs()
        time.sleep(0.2)
    dns = site.run(name + '-dnsmasq', images['dnsmasq'],
                   '--pid', 'container:%s' % pxf,
                   '-v', '%s:/var/lib/pxefilterd:ro' % lib,
                   '-v', '%s:/run/pxefilterd-dnsmasq' % run)
    return pxf, dns


def test_sidecar(images, site, probe):
    site.hostsdir_in_conf()
    lib = site.root / 'lib'       # the hostsdir volume
    run = site.root / 'run'       # dnsmasq's pid file
    for d in (lib, lib / 'dhcp-hostsdir', run):
        d.mkdir(mode=0o755)
    pxf, dns = start_sidecar(site, images, 'pxf-side', lib, run)
    try:
        eventually(probe, allowed=[A, UNKNOWN], denied=[B], timeout=60)
        deadline = time.monotonic() + 10
        while healthy(pxf)[0] != 0:     # dnsmasq seen within a second
            assert time.monotonic() < deadline, healthy(pxf)[1]
            time.sleep(0.5)
    except BaseException:
        print(site.logs())
        raise
    status = podman('exec', pxf, 'pxefilterd-ctl', '--config-file',
                    '/usr/share/pxefilterd/container.conf', 'status').stdout
    assert 'dnsmasq: running' in status, status
    took = dhcp_stops_within(site.network, 'stop', '-t', '10', pxf)
    print('sidecar: DHCP stopped %.2f s after podman stop of pxefilterd'
          % took)
    assert took <= STOP_BOUND
    logs = logs_of(pxf)
    assert 'stop command' in logs and 'succeeded' in logs, logs
    # the dnsmasq container ended with it (its pid namespace)
    state = podman('inspect', '--format', '{{.State.Running}}', dns).stdout
    assert state.strip() == 'false'
    # again, and a kill this time
    for name in (dns, pxf):
        podman('rm', '-f', name)
        site.names.remove(name)
    shutil.rmtree(lib)
    for d in (lib, lib / 'dhcp-hostsdir'):
        d.mkdir(mode=0o755)
    pxf, dns = start_sidecar(site, images, 'pxf-side2', lib, run)
    eventually(probe, allowed=[A, UNKNOWN], denied=[B], timeout=60)
    took = dhcp_stops_within(site.network, 'kill', '-s', 'KILL', pxf)
    print('sidecar: DHCP stopped %.2f s after podman kill -s KILL of '
          'pxefilterd' % took)
    assert took <= STOP_BOUND
    # still nothing served afterwards: the dnsmasq container ended too
    eventually(probe, allowed=[], denied=[A, UNKNOWN], timeout=5)
    state = podman('inspect', '--format', '{{.State.Running}}', dns).stdout
    assert state.strip() == 'false'
