"""Waking a loop thread, from any thread or a signal handler, and what it
is woken for: a stop (SIGTERM) or a reload (SIGHUP).

A signal handler runs in the main thread between two bytecodes, possibly
while that very thread is inside ``Event.wait()`` or ``Event.clear()`` and
holds the Event's lock: ``Event.set()`` from the handler would then wait
for that lock for ever.  :meth:`WakeUp.from_signal` takes no lock: it
writes a byte to a pipe, and a relay thread sets the Event.
"""

import os
import threading


class WakeUp:
    """An Event that signal handlers may set too, and the requests.

    :ivar stop_reason: why a stop was asked for (the first reason given),
        or None.
    """

    def __init__(self):
        self._event = threading.Event()
        self._relay = None
        self._relay_r = self._relay_w = None
        self.stop_reason = None
        self._reload = False

    def request_stop(self, reason, from_signal=False):
        """Ask the loop to stop; ``from_signal``: from a signal handler."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake(from_signal)

    def request_reload(self, from_signal=False):
        """Ask the loop to reload its configuration."""
        self._reload = True
        self._wake(from_signal)

    def take_reload(self):
        """True once after each :meth:`request_reload`."""
        asked, self._reload = self._reload, False
        return asked

    def _wake(self, from_signal):
        if from_signal:
            self.from_signal()
        else:
            self.set()

    def set(self):
        """Wake the loop (any thread, but not a signal handler)."""
        self._event.set()

    def from_signal(self):
        """Wake the loop from a signal handler: takes no lock."""
        if self._relay is None:
            self._relay_r, self._relay_w = os.pipe()
            self._relay = threading.Thread(target=self._relay_wakeups,
                                           name='signal-relay', daemon=True)
            self._relay.start()
        try:
            os.write(self._relay_w, b'!')
        except OSError:
            pass

    def prepare_for_signals(self):
        """Start the relay now, in a normal context (a thread started
        from a signal handler could deadlock the same way)."""
        self.from_signal()

    def _relay_wakeups(self):
        while os.read(self._relay_r, 64):
            self._event.set()

    def wait(self, timeout):
        """Wait until woken or ``timeout`` seconds; True if woken."""
        return self._event.wait(timeout)

    def clear(self):
        """Forget past wake-ups: call before looking for work, so that one
        arriving meanwhile ends the next :meth:`wait` at once."""
        self._event.clear()
