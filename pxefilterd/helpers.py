"""The processes and threads beside the loop, and their life cycle.

:class:`Helpers` owns the guard process (the dead-man switch,
:mod:`pxefilterd.guard`), the hostsdir watcher (:mod:`pxefilterd.watcher`)
with the healing of what it reports, and the control socket
(:mod:`pxefilterd.control`).  :meth:`Helpers.check`, at every loop
iteration, starts again whichever of them died; a guard that died is also
reported to the caller, since it may have stopped dnsmasq (what follows is
the supervisor's business, :mod:`pxefilterd.supervisor`).  Everything here
runs in the loop thread.
"""

import logging

from pxefilterd import control
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import repair as repair_mod

LOG = logging.getLogger(__name__)


class Helpers:
    """The guard, the watcher and the control socket of one daemon.

    :param store: the :class:`pxefilterd.hostsdir.HostsDir`.
    :param cmds: the :class:`pxefilterd.commands.Commands` (the guard runs
        their stop command).
    :param wake: callable waking the loop thread.
    :param ask: callable(request) answering a control request.
    :param forget: callable(why) having dnsmasq forget what it may have
        read from foreign hostsdir entries (a reload: see
        :meth:`pxefilterd.writer.Writer.forget`), called after a repair
        that met any.
    :ivar guard_factory: callable(stop Command, lock_fd) returning a guard,
        or None for no guard.
    :ivar watcher_factory: callable(path, wake) returning a watcher, or
        None.
    :ivar control_factory: callable(ask) returning a control socket
        server, or None.
    :ivar armed: a stop of dnsmasq is owed from now on: by the exit path,
        or by the guard if the daemon dies first.
    :ivar repair: the :class:`pxefilterd.repair.Repair` of the store.
    :ivar heals: hostsdir entries repaired.
    """

    def __init__(self, store, cmds, wake, ask, forget, guard_factory=None,
                 watcher_factory=None, control_factory=None):
        self.store = store
        self.repair = repair_mod.Repair(store)
        self.cmds = cmds
        self._wake = wake
        self._ask = ask
        self._forget = forget
        self.guard_factory = guard_factory
        self.watcher_factory = watcher_factory
        self.control_factory = control_factory
        self.guard = None
        self.watcher = None
        self.control = None
        self.armed = False
        self.heals = 0
        self.child_pid = None     # a child dnsmasq's (pxefilterd.child)

    # -- the guard ------------------------------------------------------------

    def start_guard(self):
        """Spawn the guard, if there is one and a stop command for it."""
        if self.guard_factory is not None and self.cmds.stop:
            self._spawn_guard()

    def _spawn_guard(self):
        old = self.guard
        if old is not None:
            old.close(wait=0)       # it has exited: just its pipe
        self.guard = self.guard_factory(self.cmds.stop, self.store.lock_fd)
        if self.armed:
            self.guard.arm()
        if self.child_pid:
            self.guard.child_pid(self.child_pid)

    def tell_child(self, pid):
        """A child dnsmasq now runs as ``pid`` (None: none): the guard
        stops that process if the daemon dies."""
        self.child_pid = pid
        if self.guard is not None:
            try:
                self.guard.child_pid(pid)
            except OSError as exc:      # it died: check() starts another
                LOG.debug('The guard was not told pid %s: %s', pid, exc)

    def arm(self):
        """dnsmasq is about to be started (or adopted): a stop is owed."""
        self.armed = True
        if self.guard is not None:
            self.guard.arm()

    def release_guard(self, stopped, wait):
        """At exit: disarm the guard if dnsmasq was ``stopped``; else leave
        it armed (it runs the stop command once more), waiting up to
        ``wait`` seconds for it."""
        if self.guard is None:
            return
        if stopped:
            self.guard.disarm()
        else:
            self.guard.close(wait=wait)

    # -- the control socket and the watcher -----------------------------------

    def start_control(self):
        if self.control_factory is None:
            return
        try:
            server = self.control_factory(self._ask)
        except (control.ControlError, OSError) as exc:
            # Not worth failing the filter for: explain falls back to ironic.
            LOG.error('Control socket not served (pxefilterd-ctl explain '
                      'and status cannot ask this daemon): %s', exc)
            return
        server.start()
        self.control = server

    def _stop_control(self):
        server, self.control = self.control, None
        if server is not None:
            server.close()

    def start_watcher(self):
        """Watch the hostsdir (and rescan it: anything changed before the
        watch existed has no event).

        :raises hostsdir.HostsDirError: it cannot be watched.
        """
        if self.watcher_factory is None:
            return
        self.store.track_own_writes = True
        watcher = self.watcher_factory(self.store.path, self._wake)
        try:
            watcher.start()
        except OSError as exc:
            watcher.stop()
            raise hostsdir_mod.HostsDirError('cannot watch %s: %s' % (
                self.store.path, exc.strerror or exc)) from exc
        self.watcher = watcher
        self.rescan()

    def _stop_watcher(self):
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()

    def stop(self):
        """Stop the watcher and the control socket; never raises."""
        for step in (self._stop_watcher, self._stop_control):
            try:
                step()
            except Exception:
                LOG.exception('Error during shutdown (ignored)')

    # -- every loop iteration -------------------------------------------------

    def check(self):
        """Start again whichever helper died.

        :returns: the exit status of a guard that died, else None.
        """
        guard_exit = None
        if self.guard is not None and not self.guard.alive():
            guard_exit = self.guard.proc.returncode
            LOG.error('The guard process exited unexpectedly (status %s); '
                      'starting a new one', guard_exit)
            self._spawn_guard()
        if self.watcher is not None and not self.watcher.alive():
            LOG.error('The hostsdir watcher died; restarting it and '
                      'rescanning the directory')
            self._stop_watcher()
            self.start_watcher()
        if self.control is not None and not self.control.alive():
            LOG.error('The control socket thread died; serving it again')
            self._stop_control()
            self.start_control()
        return guard_exit

    def heal(self):
        """Repair what the watcher saw changed by someone else."""
        if self.watcher is None:
            return
        pending, lost = self.watcher.take()
        if lost:
            LOG.warning('Hostsdir events may have been lost; rescanning')
            self.rescan()
            return
        try:
            for name, created in sorted(pending.items()):
                msg = self.repair.heal(name, created=created)
                if msg:
                    self.heals += 1
                    LOG.warning('Hostsdir tampering: %s', msg)
        except hostsdir_mod.TransientWriteError as exc:
            LOG.error('Could not repair the hostsdir: %s', exc)
            self.watcher.events_lost()
        self._forget_foreign()

    def rescan(self):
        """Compare every entry of the hostsdir with the index; repair."""
        try:
            for msg in self.repair.rescan():
                self.heals += 1
                LOG.warning('Hostsdir tampering: %s', msg)
        except hostsdir_mod.TransientWriteError as exc:
            LOG.error('Could not repair the hostsdir: %s', exc)
            if self.watcher is not None:
                self.watcher.events_lost()      # rescan at the next turn
        self._forget_foreign()

    def _forget_foreign(self):
        """After a repair: dnsmasq forgets what it read from foreign
        entries, whatever form their records took."""
        found = self.repair.take_foreign()
        if found:
            self._forget('%s%s' % (found[0], ' and %d more' % (
                len(found) - 1) if len(found) > 1 else ''))
