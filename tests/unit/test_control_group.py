"""The control socket's group: operators reach the daemon without the
daemon's own group (which may read the ironic credentials)."""

import grp
import logging
import os

import pytest

from pxefilterd.cmd import daemon
from pxefilterd import conf as pxf_conf
from pxefilterd import control


def other_group():
    """A group other than ours that this process may give a file to."""
    if os.geteuid() != 0:
        pytest.skip('giving a file to another group needs root here')
    for entry in grp.getgrall():
        if entry.gr_gid != os.getegid():
            return entry
    pytest.skip('no other group on this host')


def ask(request):
    return {'ok': True, 'echo': request}


def test_the_socket_gets_the_configured_group(tmp_path):
    group = other_group()
    path = str(tmp_path / 'control.sock')
    server = daemon.serve_control(path, group.gr_name, ask)
    try:
        st = os.stat(path)
        assert st.st_gid == group.gr_gid
        assert st.st_mode & 0o777 == control.SOCKET_MODE == 0o660
        server.start()
        assert control.ask(path, {'command': 'x'})['echo'] == {'command': 'x'}
    finally:
        server.close()


def test_a_missing_group_keeps_the_daemons_with_a_warning(tmp_path, caplog):
    path = str(tmp_path / 'control.sock')
    server = daemon.serve_control(path, 'no-such-group-pxf', ask)
    try:
        assert os.stat(path).st_gid == os.getegid()
        assert 'group no-such-group-pxf does not exist' in caplog.text
        assert caplog.records[-1].levelno == logging.WARNING
    finally:
        server.close()
    server = daemon.serve_control(path, '', ask)     # empty: ours, quietly
    try:
        assert os.stat(path).st_gid == os.getegid()
    finally:
        server.close()


def test_the_daemon_gives_the_socket_to_the_operators_group():
    """The default is the group the shipped sysusers snippet creates and
    the shipped unit makes the daemon a member of, not the daemon's own."""
    conf = pxf_conf.CONF
    assert conf.control_socket_group == 'pxefilterd-operators'
    assert conf.control_socket_group != 'pxefilterd'
