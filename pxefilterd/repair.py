"""Undoing tampering with the hostsdir: what the watcher saw changed, or
a whole rescan when events were lost.

Someone else's edit of one of our files is rewritten from the index; a
foreign entry (a file we did not write, a symlink, a directory...) is moved
to the quarantine directory and every record of ours it mentions is
re-asserted.  dnsmasq never forgets what it read, so each foreign entry is
also reported (:meth:`Repair.take_foreign`) for the caller to have dnsmasq
re-read the directory.
"""

import os
import re
import stat

from pxefilterd import macs
from pxefilterd.hostsdir import (TRANSIENT_ERRNOS, file_name, key_for_name,
                                 os_error, parse, read_file)
from pxefilterd.policy import Action

_MAC_TOKEN_RE = re.compile(rb'(?<![0-9A-Fa-f:])[0-9A-Fa-f]{2}'
                           rb'(?:[:-][0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f:])')
_CLIENT_ID_TOKEN_RE = re.compile(rb'[iI][dD]:[0-9A-Fa-f]{2}'
                                 rb'(?::[0-9A-Fa-f]{2})+')
# A record for a zero-length hardware address (":" or "<type>-:"): what
# IPoIB requests (and DHCPv6 clients whose MAC is unknown) match.
_NO_ADDRESS_RE = re.compile(rb'(?m)^\s*(?:[0-9A-Fa-f]{1,2}-)?:\s*(?:,|$)')


class Repair:
    """Puts a :class:`pxefilterd.hostsdir.HostsDir` back to what it decided.

    Not thread-safe: used by the store's one writer thread.
    """

    def __init__(self, store):
        self.store = store
        # What dnsmasq may have read from foreign entries since the last
        # take_foreign(): descriptions, oldest first.
        self._foreign = []

    def heal(self, name, created=False):
        """Put ``name`` back to the decided state; return what was wrong.

        Returns None when the file is as decided (or the event was our own
        rename), else a one-line description of the tampering, after having
        repaired it:

        * a MAC file edited, truncated or deleted: rewritten from the index
          (the rewrite re-asserts the record in dnsmasq);
        * a new file for a MAC we have no file for: rewritten to the unknown
          state (the wildcard's);
        * a foreign file: moved to the quarantine directory beside the
          staging files, and every MAC (and the wildcard) it mentions is
          rewritten so that our record is the newest dnsmasq has read.

        dnsmasq accepts more address forms than any scan here recognises
        (``52:54:0:0:0:99``, ``525400000099``, a hardware type prefix...)
        and never forgets a record, so re-asserting our records cannot undo
        what it read from a foreign entry.  Every foreign entry (and every
        MAC file whose content is not one of our forms) is therefore also
        reported by :meth:`take_foreign`: the caller must have dnsmasq
        re-read the directory (a reload) after this repair.

        :raises TransientWriteError: a later try may succeed (e.g. out of
            file descriptors); nothing was lost, try again.
        :raises HostsDirError: as :meth:`HostsDir.write`.
        """
        path = os.path.join(self.store.path, name)
        key = key_for_name(name)
        if created and name in self.store.own_writes:
            try:
                st = os.lstat(path)
                # (a regular file: a symlink made right after our file was
                # deleted may get the same inode number)
                if (st.st_ino == self.store.own_writes[name]
                        and stat.S_ISREG(st.st_mode)):
                    del self.store.own_writes[name]
                    return None
            except OSError:
                pass
        self.store.own_writes.pop(name, None)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise os_error('cannot look at %s: %s'
                           % (path, exc.strerror), exc) from exc
        if mode is not None and not stat.S_ISREG(mode):
            return self._quarantine_special(name, path, key)
        if key is None:
            return self._quarantine(name, path)
        try:
            data = self._read(path)
            found = parse(key, data)
        except FileNotFoundError:
            data, found = None, None
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise os_error('cannot read %s: %s' % (
                    path, exc.strerror), exc) from exc
            data, found = ('<unreadable: %s>' % exc.strerror).encode(), None
        if data is None and key not in self.store.index:
            return None   # e.g. removed by compaction: nothing was decided
        expected = self._expected(key)
        if data is not None and found is expected:
            return None
        self.store.write(key, expected)
        if data is not None and found is None:
            # Not one of our forms: dnsmasq may have read records for other
            # addresses from it, in forms no scan here recognises.
            self._foreign.append('%s held %r' % (path, data[:64]))
        if data is None:
            what = 'was deleted'
        else:
            what = 'held %r' % data[:64]
        return '%s %s; rewritten to %s' % (path, what, expected.value)

    def _expected(self, key):
        """What the file for ``key`` must say: its decided state, else (no
        decision, or an invalid file) the wildcard's."""
        expected = self.store.index.get(key)
        if expected is None:
            expected = self.store.index.get(macs.WILDCARD, Action.DENY)
        return expected

    def take_foreign(self):
        """Return (and forget) the descriptions of the foreign entries met
        since the last call; non-empty means dnsmasq may hold records we
        did not write and must re-read the directory."""
        found, self._foreign = self._foreign, []
        return found

    def _quarantine_special(self, name, path, key):
        """A symlink, directory or other special entry: dnsmasq follows
        symlinks, so what it read may be anything.  Move it away, then put
        our own record back: for a MAC name its file, for any other name
        every MAC (and the wildcard) the target mentions."""
        data = b''
        if os.path.islink(path):
            data = self._read_target(path)
        what = self.store.move_away(name)
        self._foreign.append(what)
        reasserted = self._mentioned(data)
        if key is not None:
            reasserted.add(key)
        for item in sorted(reasserted):
            self.store.write(item, self._expected(item))
        return '%s; %d of our records re-asserted' % (what, len(reasserted))

    @staticmethod
    def _read_target(path):
        """What a symlink points at, if it is a regular file (64 KiB)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return b''
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b''
            return os.read(fd, 65536)
        except OSError:
            return b''
        finally:
            os.close(fd)

    def _mentioned(self, data):
        """Every key a foreign file holds a record for (dnsmasq has read
        them: each needs a newer record of ours), the wildcard included
        when it has a wildcard or a zero-length address."""
        found = set()
        tokens = (_MAC_TOKEN_RE.findall(data)
                  + _CLIENT_ID_TOKEN_RE.findall(data))
        for token in tokens:
            key = macs.normalize_key(token.decode('ascii'))
            if key is not None:
                found.add(key)
        if macs.WILDCARD in self.store.index and (
                b'*' in data or _NO_ADDRESS_RE.search(data)):
            found.add(macs.WILDCARD)
        return found

    def _quarantine(self, name, path):
        try:
            data = self._read(path)
        except (FileNotFoundError, IsADirectoryError):
            return None   # gone again, or a directory: nothing to undo
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise os_error('cannot read %s: %s' % (
                    path, exc.strerror), exc) from exc
            data = b''    # e.g. unreadable: moved away all the same
        target = self.store.move_to_quarantine(name)
        if target is None:
            target = '(nowhere: it vanished)'
        self._foreign.append('foreign file %r' % name)
        # A key ironic does not know gets the wildcard's state: a foreign
        # allow for it would otherwise beat our wildcard deny.
        reasserted = self._mentioned(data)
        for key in sorted(reasserted):
            self.store.write(key, self._expected(key))
        # (repr: the name is anyone's, newlines included)
        return ('foreign file %r moved to %s; %d of our records re-asserted'
                % (path, target, len(reasserted)))

    def rescan(self):
        """Compare the whole directory with the index; heal every difference.

        Used when inotify events may have been lost.  Returns the messages
        of :meth:`heal`.  Streams the directory: at 100k files a set of
        every name would add ~10 MB to the daemon's peak memory.
        """
        try:
            with os.scandir(self.store.path) as entries:
                names = (entry.name for entry in entries)
                messages = [msg for msg in map(self.heal, names) if msg]
        except OSError as exc:
            raise os_error('cannot list %s: %s' % (
                self.store.path, exc.strerror or exc), exc) from exc
        # Files of the index that are missing (deleted while unwatched).
        # A separate pass: entries renamed in during the scan may or may
        # not have been listed.
        for key in list(self.store.index):
            name = file_name(key)
            if not os.path.lexists(os.path.join(self.store.path, name)):
                msg = self.heal(name)
                if msg:
                    messages.append(msg)
        return messages

    @staticmethod
    def _read(path):
        return read_file(path)
