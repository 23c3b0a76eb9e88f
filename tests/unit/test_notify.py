"""pxefilterd.notify speaks sd_notify(3) to $NOTIFY_SOCKET."""

import os
import socket

import pytest

from pxefilterd import notify


@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / 'notify')
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_messages_reach_the_socket_in_the_environment(receiver,
                                                      monkeypatch):
    path, sock = receiver
    monkeypatch.setenv('NOTIFY_SOCKET', path)
    n = notify.Notifier()
    n.ready('synced 3 ports')
    n.status('ok')
    n.watchdog()
    n.stopping('bye')
    got = [sock.recv(4096) for _ in range(4)]
    assert got == [b'READY=1\nSTATUS=synced 3 ports', b'STATUS=ok',
                   b'WATCHDOG=1', b'STOPPING=1\nSTATUS=bye']


def test_an_abstract_socket_name():
    name = 'pxefilterd-test-%d' % os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind('\0' + name)
    sock.settimeout(5)
    try:
        notify.Notifier('@' + name).watchdog()
        assert sock.recv(64) == b'WATCHDOG=1'
    finally:
        sock.close()


def test_without_a_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    n = notify.Notifier()
    assert n._sock is None
    n.ready('x')       # a no-op


def test_a_socket_gone_is_logged_not_raised(tmp_path, caplog):
    n = notify.Notifier(str(tmp_path / 'nobody-listens'))
    with caplog.at_level('DEBUG', logger='pxefilterd.notify'):
        n.watchdog()
    assert 'systemd notification WATCHDOG=1 not sent' in caplog.text
