"""The control socket: ``pxefilterd-ctl`` asks the running daemon.

One request per connection, one JSON line each way::

    {"command": "explain", "key": "52:54:00:12:34:56"}  ->  {"ok": true, ...}
    {"command": "status"}                                ->  {"ok": true, ...}

The socket is a Unix stream socket (``[DEFAULT] control_socket``), mode 0660:
its owner (pxefilterd's user), its group and root may ask; nobody else.  It
only reads: nothing sent to it changes what the daemon does.

Threads: :class:`ControlServer` accepts and reads in a thread of its own and
hands each request to ``ask`` (the service's, which has the loop thread
answer it, so the view is only ever read by its owner).  A slow or silent
client costs that thread :data:`CLIENT_TIMEOUT` at most, never the loop.
"""

import json
import logging
import os
import socket
import stat
import threading

LOG = logging.getLogger(__name__)

#: Seconds a client has to send its request and read the answer.
CLIENT_TIMEOUT = 5.0
#: Longest request accepted (bytes).
MAX_REQUEST = 4096
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
    :param ask: callable(dict) -> dict, called in the server thread; it may
        block up to ``CLIENT_TIMEOUT`` (the service hands the request to
        its loop).
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
        self._sock.listen(8)
        self._inode = os.stat(path).st_ino
        self._thread = threading.Thread(target=self._serve,
                                        name='control-socket', daemon=True)

    def start(self):
        self._thread.start()

    def alive(self):
        return self._thread.is_alive()

    def close(self):
        """Stop serving and remove the socket (if it is still ours)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return        # closed
            with conn:
                try:
                    self._handle(conn)
                except OSError as exc:
                    LOG.debug('Control socket client went away: %s', exc)
                except Exception:
                    LOG.exception('Control socket request failed')

    def _handle(self, conn):
        conn.settimeout(CLIENT_TIMEOUT)
        data = b''
        while b'\n' not in data and len(data) <= MAX_REQUEST:
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data.split(b'\n', 1)[0] or b'null')
            if not isinstance(request, dict):
                raise ValueError('a request is a JSON object')
        except ValueError as exc:
            answer = {'ok': False, 'error': 'bad request: %s' % exc}
        else:
            answer = self._ask(request)
        conn.sendall(json.dumps(answer, sort_keys=True).encode() + b'\n')


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
