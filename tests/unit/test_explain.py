"""Why a MAC may boot: the control socket, the daemon's answers, and
``pxefilterd-ctl explain`` (from the daemon, or from ironic without one)."""

import io
import json
import os
import socket
import stat
import sys
import threading
import time

import pytest

from pxefilterd import commands
from pxefilterd import control
from pxefilterd import hostsdir
from pxefilterd import service
from pxefilterd.cmd import ctl
from tests.fake_ironic import FakeIronic
from tests.waiting import wait_for

A1, B1, X1 = '52:54:00:00:00:a1', '52:54:00:00:00:b1', '52:54:00:00:00:99'


# -- the socket ------------------------------------------------------------

@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / 'control.sock')


def test_a_request_gets_the_handlers_answer(sock_path):
    asked = []
    server = control.ControlServer(
        sock_path, lambda req: asked.append(req) or {'ok': True, 'n': 1})
    server.start()
    try:
        assert control.ask(sock_path, {'command': 'x'}) == {'ok': True,
                                                            'n': 1}
        assert asked == [{'command': 'x'}]
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    finally:
        server.close()
    assert not os.path.exists(sock_path)


def test_garbage_is_answered_with_an_error(sock_path):
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    try:
        for garbage in (b'not json\n', b'[1, 2]\n', b'\n'):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock_path)
                s.sendall(garbage)
                answer = json.loads(s.makefile('rb').readline())
            assert answer['ok'] is False
            assert 'bad request' in answer['error']
        assert server.alive()
    finally:
        server.close()


def test_a_stale_socket_is_replaced_and_a_live_one_refused(sock_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock_path)
    stale.close()             # a socket file nobody listens on
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    try:
        with pytest.raises(control.ControlError, match='in use'):
            control.ControlServer(sock_path, lambda req: {'ok': True})
    finally:
        server.close()


def test_asking_nobody_is_a_control_error(sock_path):
    with pytest.raises(control.ControlError, match='cannot ask'):
        control.ask(sock_path, {'command': 'status'})


def _trickle(path, stop, every=0.3):
    """A client sending one byte every ``every`` s, never a whole line;
    returns (thread, closed): closed is set when the server hung up."""
    closed = threading.Event()

    def run():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.settimeout(every)
            while not stop.is_set():
                try:
                    s.sendall(b' ')
                    if s.recv(1) == b'':
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
        closed.set()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, closed


def test_a_slow_client_never_blocks_another(sock_path):
    """A client trickling a byte every 0.3 s used to hold the socket for
    everyone (the timeout was per recv)."""
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    stop = threading.Event()
    try:
        _trickle(sock_path, stop)
        time.sleep(0.2)
        assert control.ask(sock_path, {'command': 'status'},
                           timeout=3) == {'ok': True}
    finally:
        stop.set()
        server.close()


def test_a_slow_client_is_cut_at_the_total_deadline(sock_path, monkeypatch):
    monkeypatch.setattr(control, 'CLIENT_TIMEOUT', 1.0)
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    stop = threading.Event()
    try:
        _, closed = _trickle(sock_path, stop)
        assert closed.wait(6), 'a trickling client was never cut off'
    finally:
        stop.set()
        server.close()


def test_connections_are_capped_per_user(sock_path, monkeypatch):
    """One user's idle connections cannot take more than MAX_PER_USER
    slots (the next is closed at once), and cost no thread."""
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    threads = threading.active_count()
    held = []
    try:
        for _ in range(control.MAX_PER_USER):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            held.append(s)
        with socket.socket(socket.AF_UNIX) as extra:
            extra.connect(sock_path)
            extra.settimeout(3)
            assert extra.recv(1) == b''      # closed at once
        assert threading.active_count() <= threads
    finally:
        for s in held:
            s.close()
        server.close()


@pytest.mark.parametrize('garbage', [b'[' * 3000 + b'\n', b'{' * 4000,
                                     b'x' * 10000])
def test_bad_input_gets_a_one_line_error_and_no_traceback(sock_path, caplog,
                                                          garbage):
    server = control.ControlServer(sock_path, lambda req: {'ok': True})
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock_path)
            s.settimeout(5)
            try:
                s.sendall(garbage)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass      # (the server may answer and close first)
            answer = s.makefile('rb').readline()
        answer = json.loads(answer)
        assert answer['ok'] is False and 'bad request' in answer['error']
        assert '\n' not in answer['error'] and len(answer['error']) < 200
        assert not [r for r in caplog.records if r.exc_info]
        assert control.ask(sock_path, {'command': 'x'}) == {'ok': True}
    finally:
        server.close()


# -- the daemon's answers ---------------------------------------------------

class Rig:
    """A service on a fake ironic with node A (port A1) and node B (B1),
    serving the control socket."""

    def __init__(self, tmp_path, **settings):
        self.dir = tmp_path / 'hostsdir'
        self.dir.mkdir()
        self.sock = str(tmp_path / 'control.sock')
        self.fake = FakeIronic().start()
        self.node_a = self.fake.add_node()
        self.node_b = self.fake.add_node()
        self.fake.add_port(self.node_a, A1)
        self.fake.add_port(self.node_b, B1)
        true = [sys.executable, '-c', 'pass']
        self.svc = service.Service(
            service.Settings(sync_period=0.2, poll_interval=0.05,
                             idle_poll_interval=0, lock_wait=0, **settings),
            self.fake.client(), hostsdir.HostsDir(str(self.dir)),
            commands.Commands(start=true, stop=true, timeout=10),
            control_factory=lambda ask: control.ControlServer(self.sock,
                                                              ask))
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.svc.stats.dnsmasq_running, what='ready')

    def ask(self, key):
        answer = control.ask(self.sock, {'command': 'explain', 'key': key})
        assert answer.pop('ok') is True, answer
        return answer

    def close(self):
        self.svc.request_stop('test')
        self.thread.join(20)
        self.fake.stop()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**settings):
        made.append(Rig(tmp_path, **settings))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_the_daemon_explains_allowed_denied_and_unknown(rig):
    r = rig()
    r.fake.set_node(r.node_a, provision_state='inspect wait')
    wait_for(lambda: r.ask(A1)['action'] == 'allow', what='A1 allowed')
    allowed = r.ask(A1)
    assert allowed['rule'] == 'inspected'
    assert allowed['ironic']['node'] == r.node_a
    assert allowed['ironic']['provision_state'] == 'inspect wait'
    assert allowed['written'] == 'allow' and allowed['record'] == A1
    assert allowed['last_change']['from'] == 'deny'
    assert allowed['last_change']['to'] == 'allow'
    assert r.node_a in allowed['last_change']['reason']
    denied = r.ask(B1.upper())
    assert (denied['key'], denied['action'], denied['rule']) == (
        B1, 'deny', 'not-inspected')
    assert denied['last_change'] is None        # denied since the start
    unknown = r.ask(X1)
    assert (unknown['action'], unknown['rule'], unknown['written']) == (
        'allow', 'unknown-during-inspection', None)
    # no record of its own: the unknown policy's last change is its own
    assert unknown['last_change']['to'] == 'allow'
    assert 'unknown MACs may boot' in unknown['last_change']['reason']
    assert unknown['option'] == '[pxe_filter] deny_unknown_macs'
    wildcard = r.ask('unknown')
    assert wildcard['key'] == '*:*:*:*:*:*'
    assert wildcard['last_change']['to'] == 'allow'


def test_bad_requests_get_an_error_not_a_crash(rig):
    r = rig()
    for request in ({'command': 'explain', 'key': 'nope'},
                    {'command': 'explain'}, {'command': 'reboot'}):
        answer = control.ask(r.sock, request)
        assert answer['ok'] is False
    assert control.ask(r.sock, {'command': 'status'})['ok'] is True


def test_the_socket_goes_away_with_the_daemon(rig):
    r = rig()
    assert os.path.exists(r.sock)
    r.close()
    assert not os.path.exists(r.sock)


# -- pxefilterd-ctl explain -------------------------------------------------

def write_conf(tmp_path, hdir, url, sock, extra=''):
    conf = tmp_path / 'ctl.conf'
    conf.write_text(
        '[DEFAULT]\nroot_helper =\ncontrol_socket = %s\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        '[ironic]\nauth_type = none\nendpoint_override = %s\n'
        'api_retries = 0\ntimeout = 2\n%s' % (sock, hdir, url, extra))
    return str(conf)


def run(*argv):
    out = io.StringIO()
    code = ctl.main(list(argv), out=out)
    return code, out.getvalue()


def test_explain_asks_the_running_daemon(rig, tmp_path):
    r = rig()
    r.fake.set_node(r.node_a, provision_state='inspect wait')
    conf = write_conf(tmp_path, r.dir, r.fake.url, r.sock)
    wait_for(lambda: r.ask(A1)['action'] == 'allow', what='A1 allowed')
    code, out = run('--config-file', conf, 'explain', A1)
    assert code == 0
    assert 'decision:  allow (rule inspected)' in out
    assert 'node in inspect wait, inspect_interface agent' in out
    assert 'answers a DHCP offer' in out
    assert 'changed:' in out and 'deny -> allow' in out
    assert 'source:    the running daemon' in out
    code, out = run('--config-file', conf, 'explain', B1, '--format',
                    'json')
    result = json.loads(out)
    assert (result['action'], result['serves']['says'],
            result['serves']['agrees']) == ('deny', 'deny', True)
    assert result['file']['content'] == B1 + ',ignore'


@pytest.fixture
def fake():
    f = FakeIronic().start()
    yield f
    f.stop()


def test_explain_without_a_daemon_asks_ironic(fake, tmp_path):
    hdir = tmp_path / 'hostsdir'
    hdir.mkdir()
    node_a = fake.add_node(provision_state='inspect wait')
    node_b = fake.add_node()
    fake.add_port(node_a, A1)
    fake.add_port(node_b, B1)
    (hdir / B1).write_text(B1 + '\n')      # stale: says allow
    (hdir / 'unknown_hosts_filter').write_text(
        '*:*:*:*:*:*,ignore\n20-:,ignore\n')
    conf = write_conf(tmp_path, hdir, fake.url, str(tmp_path / 'no.sock'))
    code, out = run('--config-file', conf, 'explain', B1)
    assert code == 0
    assert 'decision:  deny (rule not-inspected)' in out
    assert 'node not in an inspection state' in out
    assert 'answers a DHCP offer' in out          # what the file says...
    assert 'NOTE:      the record on disk does not say' in out   # ...wrong
    assert 'source:    ironic, asked now (no daemon answered' in out
    code, out = run('--config-file', conf, 'explain', A1, '--format', 'json')
    result = json.loads(out)
    assert (result['action'], result['ironic']['node']) == ('allow', node_a)
    # no file for A1: the wildcard answers for it
    assert result['file']['exists'] is False
    assert result['serves']['record'].endswith('unknown_hosts_filter')
    assert result['serves']['says'] == 'deny'
    code, out = run('--config-file', conf, 'explain', X1)
    assert 'ironic:    no port has this address' in out
    assert 'rule unknown-during-inspection' in out
    assert [q.get('address') for p, q in fake.requests
            if p == '/v1/ports'] == [B1, A1, X1]


def test_explain_with_neither_daemon_nor_ironic(tmp_path):
    hdir = tmp_path / 'hostsdir'
    hdir.mkdir()
    conf = write_conf(tmp_path, hdir, 'http://127.0.0.1:9',
                      str(tmp_path / 'no.sock'))
    code, out = run('--config-file', conf, 'explain', A1)
    assert code == 1
    assert 'neither the daemon nor ironic could be asked' in out
    assert 'file:      %s: none' % (hdir / A1) in out


def test_explain_refuses_what_is_not_a_mac(tmp_path, capsys):
    hdir = tmp_path / 'hostsdir'
    hdir.mkdir()
    conf = write_conf(tmp_path, hdir, 'http://127.0.0.1:9',
                      str(tmp_path / 'no.sock'))
    code, _ = run('--config-file', conf, 'explain', '52:54:00:00:00')
    assert code == 1
    assert 'is not a MAC address' in capsys.readouterr().err


def test_explain_never_claims_nothing_while_a_foreign_record_may_be_live(
        rig, tmp_path):
    """Security review: with a foreign file allowing B1 in a form dnsmasq
    reads (52:54:0:0:0:b1), explain said dnsmasq answers nothing."""
    r = rig()
    conf = write_conf(tmp_path, r.dir, r.fake.url, r.sock)
    code, out = run('--config-file', conf, 'explain', B1)
    assert 'answers nothing' in out and 'WARNING' not in out
    (r.dir / 'evil').write_text('52:54:0:0:0:b1\n')   # no watcher here
    code, out = run('--config-file', conf, 'explain', B1)
    assert 'answers nothing' not in out
    assert 'not known for sure' in out and "'evil'" in out
    # the daemon says when the reload that makes dnsmasq forget is due
    (r.dir / 'evil').unlink()
    r.svc.writer._foreign_seen += 1        # as Writer.forget() would
    code, out = run('--config-file', conf, 'explain', B1, '--format',
                    'json')
    result = json.loads(out)
    assert result['dnsmasq']['foreign_records'] is True
    assert 'not known for sure' in result['serves']['dnsmasq_answers']


def test_explain_without_a_daemon_names_a_conflict(fake, tmp_path):
    """Two ports claim one client id: explain (asking ironic) says it is
    denied, and names both ports."""
    hdir = tmp_path / 'hostsdir'
    hdir.mkdir()
    ib = 'ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:01'
    node_a = fake.add_node(provision_state='active')
    node_b = fake.add_node(provision_state='inspect wait')
    pa = fake.add_port(node_a, A1, extra={'client-id': ib})
    pb = fake.add_port(node_b, B1, extra={'client-id': ib})
    conf = write_conf(tmp_path, hdir, fake.url, str(tmp_path / 'no.sock'))
    code, out = run('--config-file', conf, 'explain', 'id:' + ib,
                    '--format', 'json')
    result = json.loads(out)
    assert (result['action'], result['rule']) == ('deny', 'conflict')
    assert pa in result['text'] and pb in result['text']
