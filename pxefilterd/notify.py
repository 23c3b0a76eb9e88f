"""systemd notification (READY, STATUS, WATCHDOG) through sdnotify.

Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

import os

import sdnotify


class Notifier:
    def __init__(self):
        self._enabled = bool(os.environ.get('NOTIFY_SOCKET'))
        self._sd = sdnotify.SystemdNotifier() if self._enabled else None

    def _send(self, text):
        if self._sd is not None:
            self._sd.notify(text)

    def ready(self, status):
        self._send('READY=1\nSTATUS=%s' % status)

    def status(self, status):
        self._send('STATUS=%s' % status)

    def watchdog(self):
        self._send('WATCHDOG=1')

    def stopping(self, status):
        self._send('STOPPING=1\nSTATUS=%s' % status)
