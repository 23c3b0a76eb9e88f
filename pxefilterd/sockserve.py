"""One request per connection, served without letting clients hold the daemon.

The metrics port and the control socket are side services: whatever their
clients do, they must never cost the daemon more than a fixed number of
file descriptors and threads, and one slow client must never delay another.
:class:`BoundedServer` guarantees that:

* one thread multiplexes every connection (``selectors``): reading a
  request and sending its answer never take a thread of their own, so a
  client trickling one byte every few seconds holds only its own slot;
* each connection has a *total* deadline from its accept (not a timeout
  per read): when it passes, the connection is closed, answered or not;
* at most ``max_connections`` are open at once (and ``max_per_peer`` per
  peer, when the socket can tell peers apart); a connection beyond that is
  accepted and closed at once, so the listen backlog never fills with them;
* a request longer than ``max_request`` is answered as it is (the answer
  function says it is too long);
* answers are computed by a fixed pool of ``workers`` threads (they may
  wait, e.g. for the service loop); the serving thread never waits on them;
* when accept() fails for lack of descriptors (EMFILE, ENFILE), accepting
  pauses for a second and the failure is logged (at most once a minute):
  the daemon's other work goes on.
"""

import collections
import concurrent.futures
import errno
import logging
import selectors
import socket
import struct
import threading
import time

LOG = logging.getLogger(__name__)

#: accept() errors that mean "no descriptor or memory right now".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                               errno.ENOMEM})
#: Seconds accepting pauses after such an error.
_ACCEPT_PAUSE = 1.0
#: Seconds between two log lines about refused connections.
_LOG_EVERY = 60.0
_CHUNK = 4096


class _Conn:
    __slots__ = ('sock', 'peer', 'deadline', 'data', 'answer', 'busy')

    def __init__(self, sock, peer, deadline):
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.data = b''
        self.answer = None     # memoryview left to send
        self.busy = False      # a worker computes the answer


class BoundedServer:
    """Serves ``answer(request_bytes) -> answer_bytes`` on ``listener``.

    :param listener: a bound, listening stream socket; the server owns it
        from now on (closes it in :meth:`close`).
    :param terminator: bytes that end a request (b'\\n', b'\\r\\n\\r\\n').
        End of file also ends it; so does reaching ``max_request`` bytes.
    :param answer: callable(bytes) -> bytes, run in a worker thread; it
        must not raise (an exception is logged and the client gets
        nothing).
    :param name: for thread names and log lines.
    :param deadline: seconds a connection may live, from its accept.
    :param peer_of: optional callable(socket) -> hashable, who is at the
        other end (e.g. the uid of a Unix socket peer); with it, one peer
        may hold at most ``max_per_peer`` connections.
    """

    def __init__(self, listener, terminator, answer, name,
                 max_connections=32, max_per_peer=None, deadline=5.0,
                 max_request=8192, workers=2, peer_of=None,
                 clock=time.monotonic):
        self.name = name
        self._listener = listener
        self._terminator = terminator
        self._answer = answer
        self._max = max_connections
        self._max_per_peer = max_per_peer or max_connections
        self._deadline = deadline
        self._max_request = max_request
        self._peer_of = peer_of
        self._clock = clock
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix='%s-worker' % name)
        self._done = collections.deque()    # (conn, answer) from workers
        # (socket objects, not raw fds: a worker finishing after close()
        # gets EBADF, never a write into a descriptor reused meanwhile)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._conns = {}
        self._per_peer = collections.Counter()
        self._accept_paused_until = 0.0
        self._refused = 0
        self._refused_logged = -_LOG_EVERY
        self.served = 0
        listener.setblocking(False)
        self._thread = threading.Thread(target=self._serve, name=name,
                                        daemon=True)

    # -- lifecycle -----------------------------------------------------------

    def start(self):
        self._thread.start()

    def alive(self):
        return self._thread.is_alive()

    def open_connections(self):
        """How many client connections are open now."""
        return len(self._conns)

    def close(self):
        """Stop serving, close every connection and the listener."""
        self._stopping = True
        self._wake()
        if self._thread.is_alive() and \
                self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self._listener.close()     # (also when it never started)
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self):
        try:
            self._wake_w.send(b'!')
        except OSError:
            pass   # the pipe is full: a wake-up is pending anyway

    # -- the serving thread ---------------------------------------------------

    def _serve(self):
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._wake_r, selectors.EVENT_READ, 'wake')
            sel.register(self._listener, selectors.EVENT_READ, 'listen')
            listening = True
            while not self._stopping:
                now = self._clock()
                if not listening and now >= self._accept_paused_until:
                    sel.register(self._listener, selectors.EVENT_READ,
                                 'listen')
                    listening = True
                for key, _ in sel.select(self._timeout(now, listening)):
                    if key.data == 'wake':
                        self._drain_wake()
                    elif key.data == 'listen':
                        if not self._accept(sel):
                            sel.unregister(self._listener)
                            listening = False
                    elif key.data.answer is not None:
                        self._send(sel, key.data)
                    else:
                        self._recv(sel, key.data)
                self._take_answers(sel)
                self._expire(sel, self._clock())
        except Exception:
            LOG.exception('%s: serving thread failed', self.name)
        finally:
            for conn in list(self._conns.values()):
                self._drop(sel, conn)
            sel.close()
            try:
                self._listener.close()
            except OSError:
                pass

    def _timeout(self, now, listening):
        wake_at = [c.deadline for c in self._conns.values()]
        if not listening:
            wake_at.append(self._accept_paused_until)
        if not wake_at:
            return None
        return max(0.0, min(wake_at) - now)

    def _drain_wake(self):
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _accept(self, sel):
        """Accept what waits; False when accepting must pause."""
        for _ in range(64):   # then let the other connections have a turn
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._accept_paused_until = (self._clock()
                                                 + _ACCEPT_PAUSE)
                    self._note_refused('cannot accept: %s' % (
                        exc.strerror or exc))
                    return False
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            peer = None
            if self._peer_of is not None:
                try:
                    peer = self._peer_of(sock)
                except OSError:
                    peer = None
            if (len(self._conns) >= self._max
                    or self._per_peer[peer] >= self._max_per_peer):
                sock.close()
                self._note_refused(
                    '%d connections open (limit %d%s)' % (
                        len(self._conns), self._max,
                        ', %d per client' % self._max_per_peer
                        if self._peer_of is not None else ''))
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer, self._clock() + self._deadline)
            self._conns[sock.fileno()] = conn
            self._per_peer[peer] += 1
            sel.register(sock, selectors.EVENT_READ, conn)
        return True

    def _note_refused(self, why):
        self._refused += 1
        now = self._clock()
        if now - self._refused_logged >= _LOG_EVERY:
            LOG.warning('%s: connection refused (%d so far): %s', self.name,
                        self._refused, why)
            self._refused_logged = now

    def _recv(self, sel, conn):
        try:
            chunk = conn.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conn)
            return
        conn.data += chunk
        if (chunk and self._terminator not in conn.data
                and len(conn.data) < self._max_request):
            return
        sel.unregister(conn.sock)
        conn.busy = True
        request = conn.data[:self._max_request + 1]
        future = self._pool.submit(self._answer, request)
        future.add_done_callback(
            lambda f, conn=conn: self._answered(conn, f))

    def _answered(self, conn, future):
        """In a worker thread: hand the answer to the serving thread."""
        try:
            answer = future.result()
        except concurrent.futures.CancelledError:
            return
        except Exception:
            LOG.exception('%s: answering a request failed', self.name)
            answer = b''
        self._done.append((conn, answer))
        self._wake()

    def _take_answers(self, sel):
        while self._done:
            conn, answer = self._done.popleft()
            conn.busy = False
            if self._conns.get(conn.sock.fileno()) is not conn:
                continue      # expired meanwhile
            if not answer:
                self._drop(sel, conn)
                continue
            conn.answer = memoryview(answer)
            sel.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _send(self, sel, conn):
        try:
            sent = conn.sock.send(conn.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conn)
            return
        conn.answer = conn.answer[sent:]
        if not conn.answer:
            self.served += 1
            self._drop(sel, conn)

    def _expire(self, sel, now):
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            LOG.debug('%s: closing a connection past its %.0f s deadline',
                      self.name, self._deadline)
            self._drop(sel, conn)

    def _drop(self, sel, conn):
        if self._conns.get(conn.sock.fileno()) is conn:
            del self._conns[conn.sock.fileno()]
            self._per_peer[conn.peer] -= 1
            if self._per_peer[conn.peer] <= 0:
                del self._per_peer[conn.peer]
        if not conn.busy:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass


def unix_peer_uid(sock):
    """The uid of a Unix socket's peer (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                            struct.calcsize('3i'))
    return struct.unpack('3i', creds)[1]
