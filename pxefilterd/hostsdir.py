"""The dhcp-hostsdir cache: one file per key, written atomically.

Layout (the file name is the index, the content is the policy)::

    <hostsdir>/aa:bb:cc:dd:ee:ff      "aa:bb:cc:dd:ee:ff,ignore\\n"   deny
    <hostsdir>/aa:bb:cc:dd:ee:ff      "aa:bb:cc:dd:ee:ff\\n"          allow
    <hostsdir>/id:ff:00:...:0b:01     "id:ff:00:...:0b:01[,ignore]\\n"
                                      (an InfiniBand port's client id)
    <hostsdir>/unknown_hosts_filter   "*:*:*:*:*:*,ignore\\n20-:,ignore\\n"
                                      deny unknown (Ethernet and IPoIB)
    <hostsdir>/unknown_hosts_filter   "*:*:*:*:*:*\\n20-:\\n"  allow unknown

dnsmasq quirks that shape this module (see DESIGN.md):

* dnsmasq watches the directory with inotify and reads a file on
  IN_CLOSE_WRITE and IN_MOVED_TO.  A temp file inside the directory costs an
  extra queue slot per change and a half-written file could be read, so temp
  files are staged in a sibling directory on the same filesystem and renamed
  in: one IN_MOVED_TO per change, never a partial read.
* dnsmasq reads the files as its own unprivileged user: every file is 0644.
* dnsmasq never forgets a record; deleting a file changes nothing until a
  SIGHUP, so MACs are never "removed" here, only rewritten -- except by a
  compaction, which removes files and then reloads dnsmasq.
* which keys have a file is the policy's choice (``Desired.files``): with
  ``deny_unknown_macs`` only the keys that may boot and those that had one
  (see :mod:`pxefilterd.policy`).

The in-memory index mirrors what is on disk, so a sync that changes nothing
touches nothing.
"""

import errno
import fcntl
import logging
import os
import pwd
import re
import stat
import time

from pxefilterd import macs
from pxefilterd.policy import Action

LOG = logging.getLogger(__name__)

WILDCARD_FILE = 'unknown_hosts_filter'
LOCK_FILE = 'lock'
QUARANTINE_DIR = 'quarantine'
_TMP_SUFFIX = '.tmp'
# Errors after which the next sync may succeed; anything else is fatal.
# EMFILE/ENFILE: descriptors run out for a while (a flood of clients, another
# process); they come back, and exiting would only hand dnsmasq to the guard.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EINTR,
                              errno.EAGAIN, errno.ENOMEM, errno.EMFILE,
                              errno.ENFILE, errno.ENOBUFS})
# Errors of this process, not of the file being read.
_PROCESS_LIMITS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# Longest part of a foreign entry's name kept in its quarantine name: the
# suffix must fit in NAME_MAX (255) whatever the name.
_QUARANTINE_NAME_MAX = 100
_QUARANTINE_SAFE_RE = re.compile(r'[^A-Za-z0-9._:-]')
#: The record for every IPoIB client without a record of its own: hardware
#: type 0x20 (InfiniBand) with a zero-length address.  dnsmasq compares
#: hardware addresses only when the lengths match, so the Ethernet wildcard
#: never matches an IPoIB request (hlen 0) and this never matches Ethernet;
#: an ``id:`` record is compared first and wins.
IB_UNKNOWN_RECORD = '20-:'


class HostsDirError(Exception):
    """The hostsdir cannot be used; the message says why and where."""


class HostsDirLocked(HostsDirError):
    """Another process holds the hostsdir lock."""


class TransientWriteError(HostsDirError):
    """A write failed in a way the next sync may overcome (e.g. ENOSPC)."""


def os_error(msg, exc):
    """The HostsDirError for ``exc`` (an OSError): TransientWriteError when
    a later try may succeed (:data:`TRANSIENT_ERRNOS`), else fatal."""
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientWriteError(msg)
    return HostsDirError(msg)


def unsafe_mode(st):
    """Why a directory with stat ``st`` can be written by someone other
    than pxefilterd's user, its group and root; None if it cannot.

    pxefilterd's user is this process's, or -- when root runs this (e.g.
    ``pxefilterd-ctl check-config``) -- the directory's owner; its group
    is that user's primary group (or this process's group).
    """
    euid = os.geteuid()
    owner = st.st_uid if euid == 0 else euid
    groups = {0, _primary_gid(owner), os.getegid()}
    if st.st_mode & stat.S_IWOTH:
        return 'writable by every user (mode %04o)' % stat.S_IMODE(
            st.st_mode)
    if st.st_mode & stat.S_IWGRP and st.st_gid not in groups:
        return ('writable by group %d, which is not pxefilterd\'s (mode '
                '%04o)' % (st.st_gid, stat.S_IMODE(st.st_mode)))
    if st.st_uid not in (owner, 0):
        return 'owned by uid %d, who may change its mode' % st.st_uid
    return None


def _primary_gid(uid):
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def file_name(key):
    """Return the file name for a key (a MAC, a client id) or for
    :data:`macs.WILDCARD`."""
    return WILDCARD_FILE if key == macs.WILDCARD else key


def key_for_name(name):
    """Return the key a file name stands for, or None for a foreign name."""
    if name == WILDCARD_FILE:
        return macs.WILDCARD
    return name if macs.normalize_key(name) == name else None


def valid_key(key):
    """True for a normalised MAC, a normalised client id or the wildcard."""
    return key == macs.WILDCARD or macs.normalize_key(key) == key


def render(key, action):
    """Return the exact bytes of the file for ``key`` in state ``action``.

    The wildcard's file holds two records with the same verdict: every
    Ethernet MAC without a record, and every IPoIB client without one.
    """
    suffix = ',ignore\n' if action is Action.DENY else '\n'
    if key == macs.WILDCARD:
        return (key + suffix + IB_UNKNOWN_RECORD + suffix).encode('ascii')
    return (key + suffix).encode('ascii')


def parse(key, data):
    """Return the Action ``data`` expresses for ``key``, or None if invalid."""
    for action in Action:
        if data == render(key, action):
            return action
    return None


def read_file(path, limit=4096):
    """Return the first ``limit`` bytes (None: all) of the file at ``path``.

    The one way files in the daemon's directories are read: a symlink as
    the last component is never followed (``ELOOP``) and a FIFO never
    blocks the reader (``O_NONBLOCK``).

    :raises OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
                 | os.O_NONBLOCK)
    try:
        chunks = []
        left = limit
        while left is None or left > 0:
            chunk = os.read(fd, 65536 if left is None else left)
            if not chunk:
                break
            chunks.append(chunk)
            if left is not None:
                left -= len(chunk)
        return b''.join(chunks)
    finally:
        os.close(fd)


def read_base(path):
    """Read the base hosts file (``[dnsmasq_pxe_filter] dhcp_hostsfile``).

    Returns ``(entries, invalid)``: ``entries`` maps each MAC with a valid
    line to its Action, ``invalid`` counts the other non-empty lines.  A
    missing file reads as no entries.

    :raises OSError: the file exists but cannot be read (or is a symlink).
    """
    try:
        data = read_file(path, limit=None)
    except FileNotFoundError:
        return {}, 0
    entries, invalid = {}, 0
    for line in data.split(b'\n'):
        if not line:
            continue
        key = line.split(b',', 1)[0].decode('ascii', 'replace')
        action = (parse(key, line + b'\n')
                  if macs.normalize_key(key) == key else None)
        if action is None:
            invalid += 1
        else:
            entries[key] = action
    return entries, invalid


class HostsDir:
    """The hostsdir and its index.  Not thread-safe: one writer thread.

    :ivar index: ``{key: Action or None}`` for every file we know is on disk;
        None means the file exists but its content is not a valid form and
        must be rewritten.
    """

    def __init__(self, path, staging_dir=None, base_path=None):
        self.path = os.path.abspath(path)
        self.base_path = os.path.abspath(base_path) if base_path else None
        self.base = {}
        parent, base = os.path.split(self.path)
        self.staging = os.path.abspath(
            staging_dir or os.path.join(parent, '.%s.staging' % base))
        self.index = {}
        self.files_written = 0
        # With track_own_writes, own_writes maps the name of each file we
        # renamed in to its inode number: the watcher's event for our own
        # rename is then no tampering (see pxefilterd.repair).
        self.track_own_writes = False
        self.own_writes = {}
        # Keys written since the writer last had dnsmasq re-read the
        # directory: dnsmasq may not have read their newest content yet
        # (see Writer.compact).
        self.fresh = set()
        self._lock_fd = None

    # -- set-up -----------------------------------------------------------

    def check(self):
        """Check that the directory is usable; raise HostsDirError if not.

        Refused, besides the obvious (missing, not writable, staging on
        another filesystem): a hostsdir or staging directory that anyone
        but pxefilterd's user, its group and root can write -- whoever can
        drop a file there decides who boots, and no repair is faster than
        dnsmasq reading it (see :func:`unsafe_mode`).
        """
        if not os.path.isdir(self.path):
            raise HostsDirError('%s: directory does not exist' % self.path)
        why = unsafe_mode(os.stat(self.path))
        if why:
            raise HostsDirError(
                '%s: %s: anyone who can write there decides who may PXE '
                'boot; make it 0755 (owned by pxefilterd\'s user)'
                % (self.path, why))
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise HostsDirError('%s: directory is not writable' % self.path)
        try:
            os.makedirs(self.staging, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise HostsDirError('%s: cannot create the staging directory: %s'
                                % (self.staging, exc.strerror)) from exc
        if not os.access(self.staging, os.W_OK | os.X_OK):
            raise HostsDirError('%s: staging directory is not writable'
                                % self.staging)
        why = unsafe_mode(os.stat(self.staging))
        if why:
            raise HostsDirError(
                '%s: staging directory %s: files are prepared there before '
                'they are renamed into the hostsdir; make it 0755'
                % (self.staging, why))
        if os.stat(self.staging).st_dev != os.stat(self.path).st_dev:
            raise HostsDirError(
                '%s: staging directory is not on the same filesystem as %s '
                '(renames would not be atomic)' % (self.staging, self.path))
        if self.base_path:
            base_dir = os.path.dirname(self.base_path)
            if base_dir == self.path:
                raise HostsDirError('%s: the hosts file must not be inside '
                                    'the hostsdir' % self.base_path)
            if not os.access(base_dir, os.W_OK | os.X_OK):
                raise HostsDirError('%s: directory is not writable'
                                    % base_dir)

    def lock(self, wait=0.0):
        """Take the exclusive lock, waiting up to ``wait`` seconds.

        The lock is an flock on ``<staging>/lock``; it is released when every
        holder of the descriptor (this process, and the guard that inherits
        it) has exited.  Leftover temp files from a killed run are removed.

        :raises HostsDirLocked: another process still holds it.
        :raises HostsDirError: the staging directory or the lock file cannot
            be opened (a symlink is refused, never followed).
        """
        self.check()
        lock_path = os.path.join(self.staging, LOCK_FILE)
        try:
            staging = open_dir(self.staging)
        except OSError as exc:
            raise HostsDirError(
                '%s: cannot open the staging directory: %s'
                % (self.staging, _why(exc, self.staging))) from exc
        try:
            self._lock_in(staging, lock_path, wait)
        finally:
            os.close(staging)

    def _lock_in(self, staging, lock_path, wait):
        try:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644,
                         dir_fd=staging)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, 'not a regular file')
        except OSError as exc:
            raise HostsDirError('%s: cannot open the lock file: %s'
                                % (lock_path, _why(exc, lock_path))) from exc
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode('ascii', 'replace')
                    os.close(fd)
                    raise HostsDirLocked(
                        '%s is in use by another pxefilterd (pid %s, lock %s)'
                        % (self.path, holder.strip() or 'unknown', lock_path)
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, ('%d\n' % os.getpid()).encode(), 0)
        self._lock_fd = fd
        for name in os.listdir(staging):
            if name.endswith(_TMP_SUFFIX):
                os.unlink(name, dir_fd=staging)

    @property
    def lock_fd(self):
        return self._lock_fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def purge(self):
        """Remove every file from the directory; return how many.

        Entries that are not regular files (directories, symlinks --
        dnsmasq follows those --, FIFOs...) are moved to the quarantine
        directory instead, and logged.  Only safe while dnsmasq is not
        running, or followed by a reload: dnsmasq keeps what it read from a
        deleted file.
        """
        count = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    LOG.warning('Purge: %s', self.move_away(entry.name))
                    continue
                os.unlink(entry.path)
                count += 1
        self.index = {}
        self.own_writes.clear()
        return count

    def survey(self):
        """Index what is on disk without changing anything.

        Returns ``(foreign, special)``: the sorted names of the regular
        files that are not ours, and of the entries that are not regular
        files (directories, symlinks -- never followed --, FIFOs...),
        whatever their name.  A file with a valid name but invalid content,
        or that cannot be read, is indexed as None (the next apply rewrites
        it); one that vanished meanwhile is not indexed.

        :raises OSError: the directory cannot be listed, or this process
            ran out of descriptors or memory while reading.
        """
        self.index = {}
        foreign, special = [], []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    special.append(entry.name)
                    continue
                key = key_for_name(entry.name)
                if key is None:
                    foreign.append(entry.name)
                    continue
                try:
                    data = read_file(entry.path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno in _PROCESS_LIMITS:
                        raise
                    data = None
                self.index[key] = None if data is None else parse(key, data)
        return sorted(foreign), sorted(special)

    def load(self):
        """Index what is on disk instead of purging; return foreign names.

        As :meth:`survey`, then the entries that are not regular files are
        quarantined (and logged), whatever their name.
        """
        foreign, special = self.survey()
        for name in special:
            LOG.warning('Hostsdir: %s', self.move_away(name))
        return foreign

    # -- writing ------------------------------------------------------------

    def cached(self):
        """Return the MACs that have a record (the wildcard excluded)."""
        if self.base:
            return list(self.base.keys()
                        | (self.index.keys() - {macs.WILDCARD}))
        return [k for k in self.index if k != macs.WILDCARD]

    def current(self):
        """Return ``{key: Action}`` of what dnsmasq would read (for diff).

        With a base hosts file, a per-MAC file always overrides the base
        line: dnsmasq reads ``--dhcp-hostsfile`` before ``--dhcp-hostsdir``
        at start-up and SIGHUP, and the newest record for a MAC wins.
        """
        if not self.base:
            return self.index
        view = dict(self.base)
        view.update(self.index)
        return view

    def load_base(self):
        """Index the base hosts file as it is on disk; return the number of
        invalid lines (left out of the index)."""
        self.base, invalid = read_base(self.base_path)
        return invalid

    def write_base(self, entries):
        """Atomically replace the base hosts file with ``{mac: Action}``.

        dnsmasq does not watch this file: it reads it at start-up and on
        SIGHUP only, so rewriting it costs dnsmasq nothing until then.
        """
        for key in entries:
            if macs.normalize_key(key) != key:
                raise ValueError('refusing to write a line for %r' % (key,))
        data = b''.join(render(mac, entries[mac]) for mac in sorted(entries))
        base_dir, base_name = os.path.split(self.base_path)
        tmp = os.path.join(base_dir, '.%s%s' % (base_name, _TMP_SUFFIX))
        self._replace(tmp, self.base_path, data)
        self.base = dict(entries)
        self.files_written += 1

    def rebase(self, entries, unknown, keep=()):
        """Move every record into the base file; keep only the wildcard.

        ``entries`` (``{mac: Action}``) becomes the whole base file, the
        wildcard file is set to ``unknown`` and every per-MAC file is
        removed, except those of ``keep`` (they must agree with
        ``entries``).  Each step leaves a consistent directory: should
        dnsmasq re-read it in between, every MAC still reads as decided.
        Follow with a reload (or start dnsmasq) to drop the removed
        records.
        """
        self.write_base(entries)
        self.remove([k for k in self.index
                     if k != macs.WILDCARD and k not in keep])
        if self.index.get(macs.WILDCARD) is not unknown:
            self.write(macs.WILDCARD, unknown)

    def apply(self, changes, pace=None):
        """Write every ``{key: Action}`` in ``changes``; return the count.

        Writes are atomic renames; the index is updated after each one, so
        after an error it still describes the disk exactly.

        :param pace: optional callable taking the number written so far,
            called after each write (used to rate-limit bursts).
        :raises TransientWriteError: a write failed with e.g. ENOSPC; the
            remaining changes were not attempted.
        :raises HostsDirError: the directory is gone, read-only or otherwise
            unusable.
        """
        written = 0
        for key, action in changes.items():
            self.write(key, action)
            written += 1
            if pace is not None:
                pace(written)
        return written

    def write(self, key, action):
        """Atomically replace the file for ``key`` with ``action``'s form."""
        name = file_name(key)
        if not valid_key(key):
            # Defence in depth: callers normalise, but never trust it.
            raise ValueError('refusing to write a file for %r' % (key,))
        ino = self._replace(os.path.join(self.staging, name + _TMP_SUFFIX),
                            os.path.join(self.path, name),
                            render(key, action))
        self.index[key] = action
        self.fresh.add(key)
        self.files_written += 1
        if self.track_own_writes:
            self.own_writes[name] = ino

    @staticmethod
    def _replace(tmp, target, data):
        """Write ``data`` to ``tmp`` and rename it onto ``target``: a reader
        sees the old file or the new one, never a part of it.

        ``tmp`` is created mode 0644 whatever the umask (dnsmasq reads as
        its own user) and never through a symlink.  Returns the new file's
        inode number.

        :raises TransientWriteError: e.g. ENOSPC; ``tmp`` is removed.
        :raises HostsDirError: any other failure; ``tmp`` is removed.
        """
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                         | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                os.fchmod(fd, 0o644)
                view = memoryview(data)
                while view:
                    done = os.write(fd, view)
                    if not done:
                        raise OSError(errno.ENOSPC, 'short write')
                    view = view[done:]
                ino = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            os.rename(tmp, target)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise os_error('cannot write %s: %s' % (
                target, exc.strerror or exc), exc) from exc
        return ino

    def remove(self, keys):
        """Delete the files of ``keys`` (compaction; follow with a reload)."""
        for key in keys:
            self.index.pop(key, None)
            self.own_writes.pop(file_name(key), None)
            _unlink_quietly(os.path.join(self.path, file_name(key)))

    # -- quarantine -----------------------------------------------------------

    def move_to_quarantine(self, name):
        """Move ``name`` to the quarantine directory beside the staging
        files; return where, or None if it vanished meanwhile.

        The quarantine name is the entry's name cut to a safe length and
        alphabet, plus a unique suffix: any name that can exist in the
        hostsdir can be moved.

        :raises TransientWriteError, HostsDirError: it cannot be moved.
        """
        qdir = os.path.join(self.staging, QUARANTINE_DIR)
        safe = _QUARANTINE_SAFE_RE.sub(
            '_', name[:_QUARANTINE_NAME_MAX]) or '_'
        target = os.path.join(qdir, '%s.%d' % (safe, time.time_ns()))
        try:
            os.makedirs(qdir, mode=0o700, exist_ok=True)
            os.rename(os.path.join(self.path, name), target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error('cannot move %r out of %s: %s' % (
                name, self.path, exc.strerror or exc), exc) from exc
        return target

    def move_away(self, name):
        """Move an entry that is not a regular file to the quarantine
        directory; return a one-line description."""
        path = os.path.join(self.path, name)
        try:
            mode = os.lstat(path).st_mode
            kind = ('a symlink to %r' % os.readlink(path)
                    if stat.S_ISLNK(mode) else 'a directory'
                    if stat.S_ISDIR(mode) else
                    'not a regular file (mode %o)' % stat.S_IFMT(mode))
        except FileNotFoundError:
            return '%r vanished' % path
        target = self.move_to_quarantine(name)
        if target is None:
            return '%r (%s) vanished' % (path, kind)
        return '%r was %s; moved to %s' % (path, kind, target)


def open_dir(path):
    """Open the directory ``path`` (for ``dir_fd=`` calls) without
    following a symlink as its last component.

    :raises OSError: ``ELOOP`` for a symlink, ``ENOTDIR``, ``ENOENT``...
    """
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                   | os.O_CLOEXEC)


def _why(exc, path):
    # (O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        return 'it is a symlink (refused: never followed)'
    return exc.strerror or str(exc)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
