"""An HTTP/1.1 relay on 127.0.0.1 in front of a real ironic: hang it, time it.

:class:`IronicProxy` listens on a free port and relays every request, one at
a time per connection (keep-alive included), to the upstream address.  It
serves two purposes:

- **faults**: while :attr:`IronicProxy.hang` is true it reads requests but
  never forwards or answers them -- an ironic whose API is wedged (the
  socket accepts, nothing comes back).  This holds for new connections and
  for kept-alive ones alike.  :meth:`release` ends the hang (held
  connections are closed, as by a restart).
- **accounting**: it records, per request, the request line and the time
  from the request's last byte to the response's last byte
  (:attr:`IronicProxy.records`): the server time the request cost, plus
  loopback copies (microseconds).

Framing is the minimum ironic needs: ``Content-Length`` or ``chunked``
bodies, or a response read to EOF.  Standard library only; every socket has
a timeout; threads are daemons.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Record:
    """One relayed request: its first line, start time and duration (s)."""

    line: str
    started: float
    seconds: float
    status: int


class _Closed(Exception):
    pass


class _Reader:
    """Buffered reads of HTTP framing from one socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b''

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Closed()
        self.buf += data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(marker, 1)
        return head + marker

    def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def rest(self) -> bytes:
        chunks = [self.buf]
        self.buf = b''
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b''.join(chunks)
            chunks.append(data)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode('latin-1').split('\r\n')[1:]
    result = {}
    for line in lines:
        if ':' in line:
            name, value = line.split(':', 1)
            result[name.strip().lower()] = value.strip()
    return result


def _body(reader: _Reader, headers: dict[str, str], response: bool) -> bytes:
    if 'chunked' in headers.get('transfer-encoding', '').lower():
        parts = []
        while True:
            size_line = reader.until(b'\r\n')
            parts.append(size_line)
            size = int(size_line.split(b';')[0].strip() or b'0', 16)
            parts.append(reader.exactly(size + 2))
            if size == 0:
                return b''.join(parts)
    if 'content-length' in headers:
        return reader.exactly(int(headers['content-length']))
    return reader.rest() if response else b''


class IronicProxy:
    """Relay 127.0.0.1:<port> to ``upstream`` (``(host, port)``)."""

    def __init__(self, upstream: tuple[str, int], *, io_timeout: float = 120):
        self.upstream = upstream
        self.io_timeout = io_timeout
        self.hang = False
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._accept = threading.Thread(target=self._accept_loop,
                                        name='ironic-proxy', daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return 'http://127.0.0.1:%d' % self.port

    def release(self) -> None:
        """Stop hanging; connections held so far are closed."""
        self.hang = False
        release, self._release = self._release, threading.Event()
        release.set()

    def take_records(self) -> list[Record]:
        """Return the records so far and start a new list."""
        with self._lock:
            records, self.records = self.records, []
        return records

    def close(self) -> None:
        self._closed.set()
        self._release.set()
        self._accept.join(5)
        self._listener.close()

    def __enter__(self) -> IronicProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,),
                             daemon=True).start()

    def _hold(self) -> None:
        release = self._release
        while not release.wait(0.2) and not self._closed.is_set():
            pass

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            client.settimeout(self.io_timeout)
            creader = _Reader(client)
            ureader = None
            while not self._closed.is_set():
                head = creader.until(b'\r\n\r\n')
                request = head + _body(creader, _headers(head), False)
                if self.hang:
                    self._hold()
                    return
                started = time.monotonic()
                for attempt in (1, 2):
                    if upstream is None:
                        upstream = socket.create_connection(
                            self.upstream, timeout=self.io_timeout)
                        ureader = _Reader(upstream)
                    try:
                        upstream.sendall(request)
                        rhead = ureader.until(b'\r\n\r\n')
                        break
                    except (_Closed, OSError):
                        # a kept-alive upstream connection closed by
                        # ironic in between: once more on a new one
                        upstream.close()
                        upstream = None
                        if attempt == 2 or ureader.buf:
                            raise
                rheaders = _headers(rhead)
                response = rhead + _body(ureader, rheaders, True)
                seconds = time.monotonic() - started
                client.sendall(response)
                status = int(rhead.split(b' ', 2)[1])
                with self._lock:
                    self.records.append(Record(
                        head.split(b'\r\n', 1)[0].decode('latin-1'),
                        started, seconds, status))
                if (rheaders.get('connection', '').lower() == 'close'
                        or 'content-length' not in rheaders
                        and 'chunked' not in rheaders.get(
                            'transfer-encoding', '')):
                    return
        except (_Closed, OSError, ValueError, IndexError):
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()
