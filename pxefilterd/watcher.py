"""Watching the hostsdir for changes made by anyone but us (watchdog).

The handler only records *names* and wakes the service loop; every read and
repair happens in the service thread (:meth:`Repair.heal`), so the store
has a single writer.  Our own renames show up as "created" events and are
recognised there by inode, without reading the file.

When the kernel's inotify queue overflows, events are lost and the whole
directory must be compared again.  watchdog (7.1.0 and later) calls
``on_queue_overflow`` of every inotify watch callback -- here, the watch
group of the hostsdir's emitter -- when the kernel reports the overflow;
earlier releases drop it silently, hence the pinned versions
(``requirements.txt``; ``tests/unit/test_packaging.py`` checks the hook is
where this module expects it).  The emitter here is watchdog's inotify
emitter, with that call passed on to the watcher.
"""

import logging
import os
import threading

from watchdog import events
from watchdog.observers import api
from watchdog.observers import inotify
from watchdog.observers import inotify_c

LOG = logging.getLogger(__name__)


def _emitter_class(on_overflow):
    class Emitter(inotify.InotifyEmitter):
        def on_thread_start(self):
            super().on_thread_start()
            group = self._inotify
            library_hook = group.on_queue_overflow

            def on_queue_overflow():
                library_hook()
                on_overflow()

            group.on_queue_overflow = on_queue_overflow

    return Emitter


class _Observer(api.BaseObserver):
    """watchdog's inotify observer, with an overflow-reporting emitter."""

    def __init__(self, on_overflow):
        self._inotify_fd = inotify_c.InotifyFD()
        self._inotify_fd.start()
        super().__init__(_emitter_class(on_overflow),
                         inotify_fd=self._inotify_fd)

    def on_thread_stop(self):
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()


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

    def start(self):
        self._observer = _Observer(self.events_lost)
        self._observer.schedule(self, self.path, recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def stop(self):
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
