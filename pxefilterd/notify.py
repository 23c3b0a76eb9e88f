"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING).

The protocol of sd_notify(3): one datagram of newline-separated
``VAR=value`` lines to the AF_UNIX socket ``$NOTIFY_SOCKET`` names (a name
starting with ``@`` is in the abstract namespace).  A dozen lines of our
own instead of a dependency (sdnotify, unmaintained since 2019 and not in
OpenStack's requirements).
"""

import logging
import os
import socket

LOG = logging.getLogger(__name__)

#: Seconds a notification may wait for room in systemd's queue.
SEND_TIMEOUT = 1.0


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET`` (or ``address``).

    Without a socket every call is a no-op.  A notification that cannot be
    sent is logged at DEBUG level and dropped, never raised: like
    sd_notify(), it must not stop the daemon.
    """

    def __init__(self, address=None):
        if address is None:
            address = os.environ.get('NOTIFY_SOCKET', '')
        if address.startswith('@'):
            address = '\0' + address[1:]
        self._address = address or None
        self._sock = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM
                                       | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT)

    def _send(self, text):
        if self._sock is None:
            return
        try:
            self._sock.sendto(text.encode('utf-8', 'replace'), self._address)
        except OSError as exc:
            LOG.debug('systemd notification %s not sent: %s',
                      text.split('\n', 1)[0], exc)

    def ready(self, status):
        self._send('READY=1\nSTATUS=%s' % status)

    def status(self, status):
        self._send('STATUS=%s' % status)

    def watchdog(self):
        self._send('WATCHDOG=1')

    def stopping(self, status):
        self._send('STOPPING=1\nSTATUS=%s' % status)
