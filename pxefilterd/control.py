"""The control socket: ``pxefilterd-ctl`` asks the running daemon.

One request per connection, one JSON line each way::

    {"command": "explain", "key": "52:54:00:12:34:56"}  ->  {"ok": true, ...}
    {"command": "status"}                                ->  {"ok": true, ...}

The socket is a Unix stream socket (``[DEFAULT] control_socket``), mode 0660:
its owner (pxefilterd's user), its group and root may ask; nobody else.  It
only reads: nothing sent to it changes what the daemon does.

Threads: :class:`ControlServer` is a bounded server
(:class:`pxefilterd.sockserve.BoundedServer`): one thread reads every request
and sends every answer, without blocking, so a slow or silent client holds
only its own connection, for
:data:`CLIENT_TIMEOUT` in total at most, never the loop nor another client.
Two worker threads hand complete requests to ``ask`` (the service's, which
has the loop thread answer it, so the view is only ever read by its owner).
A request that is not a JSON object gets a one-line error answer.
"""

import json
import logging
import os
import socket
import stat

from pxefilterd import sockserve

LOG = logging.getLogger(__name__)

#: Seconds a client has to send its request and read the answer.
CLIENT_TIMEOUT = 5.0
#: Longest request accepted (bytes).
MAX_REQUEST = 4096
#: Connections open at once, and per connecting user (uid): one user
#: cannot take every slot from the others.
MAX_CONNECTIONS = 32
MAX_PER_USER = 8
SOCKET_MODE = 0o660


class ControlError(Exception):
    """The socket cannot be served, or the daemon cannot be asked."""


def _refuse_if_in_use(path):
    """Remove a stale socket left by a dead daemon; raise if one answers."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError('%s exists and is not a socket' % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)      # nobody listens: left by a dead daemon
        return
    finally:
        probe.close()
    raise ControlError('%s is in use by another process' % path)


class ControlServer:
    """Serves ``ask(request) -> answer`` on a Unix socket.

    :param path: the socket's path (its directory must exist).
    :param ask: callable(dict) -> dict, called in a worker thread; it may
        block up to ``CLIENT_TIMEOUT`` (the service hands the request to
        its loop), which holds that worker, not the other clients.
    :raises ControlError: the socket cannot be made.
    """

    def __init__(self, path, ask):
        self.path = path
        self._ask = ask
        _refuse_if_in_use(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # (no umask dance: it would apply to every thread; nobody can
            # connect before listen() below, and the mode is set first)
            self._sock.bind(path)
            os.chmod(path, SOCKET_MODE)
        except OSError as exc:
            self._sock.close()
            raise ControlError('cannot bind %s: %s'
                               % (path, exc.strerror or exc)) from exc
        self._sock.listen(16)
        self._inode = os.stat(path).st_ino
        self._server = sockserve.BoundedServer(
            self._sock, b'\n', self._answer, name='control-socket',
            max_connections=MAX_CONNECTIONS, max_per_peer=MAX_PER_USER,
            deadline=CLIENT_TIMEOUT, max_request=MAX_REQUEST, workers=2,
            peer_of=sockserve.unix_peer_uid)

    def start(self):
        self._server.start()

    def alive(self):
        return self._server.alive()

    def close(self):
        """Stop serving and remove the socket (if it is still ours)."""
        self._server.close()
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _answer(self, data):
        """One request line in, one answer line out (in a worker)."""
        try:
            request = parse_request(data)
        except ValueError as exc:
            answer = {'ok': False, 'error': 'bad request: %s' % exc}
        else:
            answer = self._ask(request)
        return json.dumps(answer, sort_keys=True).encode() + b'\n'


def parse_request(data):
    """Return the request (a dict) that ``data``'s first line holds.

    :raises ValueError: with a one-line reason: too long, not JSON, nested
        too deep for the parser, not an object.
    """
    if len(data) > MAX_REQUEST:
        raise ValueError('longer than %d bytes' % MAX_REQUEST)
    try:
        request = json.loads(data.split(b'\n', 1)[0] or b'null')
    except RecursionError:
        raise ValueError('nested too deeply') from None
    except ValueError as exc:
        raise ValueError('not JSON (%s)' % exc) from None
    if not isinstance(request, dict):
        raise ValueError('a request is a JSON object')
    return request


def ask(path, request, timeout=CLIENT_TIMEOUT):
    """Send ``request`` to the daemon at ``path``; return its answer.

    :raises ControlError: no daemon listens there, or it did not answer.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b'\n')
        data = b''
        while not data.endswith(b'\n'):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ControlError('cannot ask the daemon at %s: %s'
                           % (path, exc.strerror or exc)) from exc
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ControlError('the daemon at %s answered garbage: %.100r'
                           % (path, data)) from exc
    if not isinstance(answer, dict):
        raise ControlError('the daemon at %s answered %.100r' % (path, answer))
    return answer
