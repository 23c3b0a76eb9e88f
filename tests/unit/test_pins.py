"""The committed pins (pins/*.txt) are complete and match their inputs.

tools/setup.sh and tox install only from these files, so a pin set that
misses a package, or no longer satisfies what requirements.txt asks for,
would let an install float (or fail) on another day.
"""

import configparser
import pathlib
import re

from packaging import requirements
from packaging.version import Version
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PINS = REPO / 'pins'
ENVIRONMENTS = ('dev', 'ironic', 'keystone', 'guest', 'ipa')


def _lines(path):
    for raw in path.read_text().splitlines():
        line = raw.split('#', 1)[0].strip()
        if line:
            yield line


def _pins(name):
    """{canonical name: version} of pins/NAME.txt."""
    pins = {}
    for line in _lines(PINS / ('%s.txt' % name)):
        req = requirements.Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == '==', (
            'pins/%s.txt: %r is not an exact pin' % (name, line))
        pins[_canonical(req.name)] = spec[0].version
    return pins


def _canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def _inputs(path):
    """Requirements of a .in file, following -r includes."""
    for line in _lines(path):
        if line.startswith('-r'):
            yield from _inputs((path.parent / line[2:].strip()).resolve())
        elif line.startswith('-c'):
            continue   # a constraint file, not an input
        else:
            yield requirements.Requirement(line)


@pytest.mark.parametrize('name', ENVIRONMENTS)
def test_every_input_is_pinned_to_a_version_it_allows(name):
    pins = _pins(name)
    for req in _inputs(PINS / ('%s.in' % name)):
        version = pins.get(_canonical(req.name))
        assert version is not None, (
            'pins/%s.txt lacks %s: run tools/refresh-pins.sh %s'
            % (name, req.name, name))
        assert req.specifier.contains(version, prereleases=True), (
            'pins/%s.txt has %s==%s, which %s does not allow: run '
            'tools/refresh-pins.sh %s' % (name, req.name, version, req, name))


def test_the_guest_runs_the_versions_the_tests_run():
    # pins/guest.txt (the systemd test's Debian guest) is constrained by
    # pins/dev.txt: every package both hold has the same version.
    dev = _pins('dev')
    for name, version in _pins('guest').items():
        assert dev.get(name, version) == version, (
            'pins/guest.txt has %s==%s, pins/dev.txt %s: run '
            'tools/refresh-pins.sh guest' % (name, version, dev[name]))


def test_the_project_requirements_are_inputs_of_the_dev_pins():
    includes = [line for line in _lines(PINS / 'dev.in')
                if line.startswith('-r')]
    assert sorted(includes) == ['-r ../doc/requirements.txt',
                                '-r ../requirements.txt',
                                '-r ../test-requirements.txt']


def test_setup_and_tox_install_from_the_pins():
    setup = (REPO / 'tools' / 'setup.sh').read_text()
    # the guest's wheels are built by the systemd test's root builder, the
    # agent's by the ramdisk builder
    installers = setup + ''.join(
        (REPO / 'tools' / name).read_text()
        for name in ('guest-root.sh', 'ramdisk/build.sh'))
    for name in ENVIRONMENTS:
        assert 'pins/%s.txt' % name in installers
    # no venv is given a bare package name to resolve on the day
    assert not re.search(r'uv pip install[^\n]*==', setup)
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / 'tox.ini')
    with_deps = [name for name in tox.sections() if 'deps' in tox[name]]
    assert len(with_deps) >= 2
    for name in with_deps:
        pins = 'min' if name == 'testenv:py3-min' else 'dev'
        assert '-c{toxinidir}/pins/%s.txt' % pins in tox[name]['deps'], name
    assert 'UV_CONSTRAINT' in (REPO / 'tools' / 'test.sh').read_text()


def test_the_min_pins_hold_every_direct_requirement_at_its_lower_bound():
    """tox -e py3-min tests the lower bounds, from committed pins."""
    pins = _pins('min')
    for req in _inputs(PINS / 'min.in'):
        lower = [s.version for s in req.specifier
                 if s.operator in ('>=', '==')]
        assert lower, 'pins/min.in: %s has no lower bound' % req
        pinned = pins.get(_canonical(req.name))
        assert pinned and Version(pinned) == Version(lower[0]), (
            'pins/min.txt: %s is not at %s: run tools/refresh-pins.sh min'
            % (req.name, lower[0]))
