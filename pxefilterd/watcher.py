"""Watching the hostsdir for changes made by anyone but us (watchdog).

The handler only records *names* and wakes the service loop; every read and
repair happens in the service thread (:meth:`HostsDir.heal`), so the store
has a single writer.  Our own renames show up as "created" events and are
recognised there by inode, without reading the file.
"""

import logging
import os
import threading

from watchdog import events
from watchdog.observers import Observer

LOG = logging.getLogger(__name__)

# watchdog reports a kernel queue overflow only as a log record on this
# logger; it is the one signal that events were lost, so we listen for it.
_WATCHDOG_LOGGER = 'watchdog.observers.inotify_c'


class _OverflowFilter(logging.Filter):
    def __init__(self, watcher):
        super().__init__()
        self._watcher = watcher

    def filter(self, record):
        if 'overflow' in record.getMessage().lower():
            self._watcher.events_lost()
        return True


class HostsDirWatcher(events.FileSystemEventHandler):
    """Collects names of hostsdir entries that changed.

    :param wake: callable invoked (from the observer thread) after new names
        were recorded.
    """

    def __init__(self, path, wake):
        super().__init__()
        self.path = os.path.abspath(path)
        self._wake = wake
        self._lock = threading.Lock()
        self._pending = {}
        self._lost = False
        self._observer = None
        self._filter = _OverflowFilter(self)

    def start(self):
        self._observer = Observer()
        self._observer.schedule(self, self.path, recursive=False)
        self._observer.daemon = True
        self._observer.start()
        logging.getLogger(_WATCHDOG_LOGGER).addFilter(self._filter)

    def stop(self):
        logging.getLogger(_WATCHDOG_LOGGER).removeFilter(self._filter)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)

    def alive(self):
        return self._observer is not None and self._observer.is_alive()

    def events_lost(self):
        with self._lock:
            self._lost = True
        self._wake()

    def _record(self, path, created):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        directory, name = os.path.split(path)
        if directory != self.path or not name:
            return
        with self._lock:
            # A later non-created event for the same name must be verified.
            self._pending[name] = self._pending.get(name, True) and created
        self._wake()

    def on_any_event(self, event):
        if event.is_directory and event.src_path == self.path:
            return
        if event.event_type == events.EVENT_TYPE_MOVED:
            self._record(event.src_path, False)
            self._record(event.dest_path, False)
        elif event.event_type in (events.EVENT_TYPE_CREATED,
                                  events.EVENT_TYPE_MODIFIED,
                                  events.EVENT_TYPE_CLOSED,
                                  events.EVENT_TYPE_DELETED):
            self._record(event.src_path,
                         event.event_type == events.EVENT_TYPE_CREATED)

    def take(self):
        """Return ``(pending, lost)``: ``{name: created_only}`` and whether
        events may have been lost since the last call."""
        with self._lock:
            pending, self._pending = self._pending, {}
            lost, self._lost = self._lost, False
        return pending, lost
