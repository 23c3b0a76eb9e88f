"""bindep.txt is what tools/setup.sh installs and what the README asks
operators to install, read through bindep itself."""

import functools
import pathlib
import re

import pytest

depends = pytest.importorskip('bindep.depends')

REPO = pathlib.Path(__file__).resolve().parents[2]
# The platform the project is tested on, whatever this machine is.
DEBIAN_12 = ['platform:dpkg', 'platform:debian', 'platform:debian-12',
             'platform:debian-bookworm']


@functools.cache
def _depends():
    # parsing compiles bindep's grammar: seconds
    return depends.Depends((REPO / 'bindep.txt').read_text())


def packages(*profiles):
    deps = _depends()
    return {rule[0] for rule in deps.active_rules(DEBIAN_12 + list(profiles))}


def test_the_five_minute_path_installs_what_the_daemon_needs():
    # README's "apt-get install" line of the operators' install, which
    # tests/integration/test_systemd.py runs in a Debian 12 guest.
    readme = (REPO / 'README.md').read_text()
    line = re.search(r'^\s+apt-get install --no-install-recommends (.*)$',
                     readme, re.M).group(1)
    assert set(line.split()) <= packages('daemon'), line
    assert {'dnsmasq-base', 'sudo', 'procps'} <= packages('daemon')


def test_the_tests_get_the_daemons_packages_and_their_own():
    test = packages('test')
    assert packages('daemon') - {'sudo'} <= test
    # real dnsmasq, DHCP clients, firmware for the VMs, the systemd guest
    assert {'dnsmasq-base', 'isc-dhcp-client', 'qemu-system-x86', 'ovmf',
            'ipxe-qemu', 'systemd-container', 'debootstrap'} <= test
    # sudo stays off the test host, as before bindep.txt: the unit tests
    # give check-config a fake sudo, the systemd test's guest has its own
    assert 'sudo' not in test


def test_the_docs_get_git():
    assert 'git' in packages('doc')


def test_setup_installs_the_test_profile_with_bindep():
    setup = (REPO / 'tools' / 'setup.sh').read_text()
    assert '.venv/bin/bindep --brief --file bindep.txt test' in setup
    # no second package list: only the bootstrap of the venv bindep runs in
    named = set(re.findall(r'apt_install ([a-z0-9][a-z0-9+.-]+)', setup))
    assert named == {'python3-venv'}
    assert 'python3-venv' in packages('test')
    # the bootstrap comes before the venv is made, bindep after
    assert (setup.index('apt_install python3-venv')
            < setup.index('python3 -m venv .venv')
            < setup.index('.venv/bin/bindep'))
