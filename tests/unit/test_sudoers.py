"""check-config's question to sudo: may the daemon's user run a command?"""

import os
import pwd

import pytest

from pxefilterd import sudoers


def _fake_sudo(tmp_path, code, said=''):
    """A sudo that records its arguments and answers with *code*."""
    path = tmp_path / 'sudo'
    path.write_text('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/args\n%s exit %d\n'
                    % (tmp_path, 'echo "%s" >&2;' % said if said else '',
                       code))
    path.chmod(0o755)
    return str(path)


def test_allowed_is_none_and_asks_for_that_user(tmp_path):
    sudo = _fake_sudo(tmp_path, 0)
    assert sudoers.refusal('pxefilterd', ['rw', 'conf', 'systemctl'],
                           sudo=sudo) is None
    assert (tmp_path / 'args').read_text().split() == [
        '-n', '-l', '-U', 'pxefilterd', '--', 'rw', 'conf', 'systemctl']


def test_refused_says_what_sudo_said(tmp_path):
    sudo = _fake_sudo(tmp_path, 1, 'Sorry, user pxefilterd is not allowed')
    why = sudoers.refusal('pxefilterd', ['rw'], sudo=sudo)
    assert why == ('sudo would refuse it: Sorry, user pxefilterd is not '
                   'allowed')


def test_no_sudo_is_a_refusal(tmp_path):
    why = sudoers.refusal('pxefilterd', ['rw'],
                          sudo=str(tmp_path / 'missing'))
    assert why.startswith('sudo -l could not be asked')


def test_daemon_user_is_the_hostsdir_owner(tmp_path):
    hostsdir = tmp_path / 'hostsdir'
    hostsdir.mkdir()
    if os.geteuid() != 0:
        assert sudoers.daemon_user(hostsdir) == pwd.getpwuid(
            os.geteuid()).pw_name
        return
    assert sudoers.daemon_user(hostsdir) is None      # root: nothing to ask
    nobody = pwd.getpwnam('nobody')
    os.chown(hostsdir, nobody.pw_uid, nobody.pw_gid)
    assert sudoers.daemon_user(hostsdir) == 'nobody'
    # not created yet: its nearest existing parent
    assert sudoers.daemon_user(hostsdir / 'not' / 'yet') == 'nobody'


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root')
def test_unnamed_owner_is_none(tmp_path):
    hostsdir = tmp_path / 'hostsdir'
    hostsdir.mkdir()
    os.chown(hostsdir, 54321, 54321)
    assert sudoers.daemon_user(hostsdir) is None
