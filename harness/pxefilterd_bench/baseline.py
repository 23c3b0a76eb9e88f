"""An inspector-like hostsdir driver: the baseline pxefilterd is compared to.

It behaves like the ironic-inspector dnsmasq PXE filter as described in the
performance issue (this is our own code, written from that description):
it keeps no state between syncs, so every sync

1. lists the hostsdir,
2. ``stat()``s every file and tells "allow" from "deny" by the file size
   (``mac\\n`` is 18 bytes, ``mac,ignore\\n`` 25),
3. rewrites, in place (open, truncate, write), every file whose state
   differs from the desired one: ports of nodes under inspection allowed,
   other ports denied, files of MACs no longer in ironic set to the state of
   unknown MACs, and the ``unknown_hosts_filter`` wildcard file.

The file contents are the same four forms pxefilterd writes, so both
drivers can be run on the same data and compared file by file.
"""

import os

from pxefilterd.hostsdir import IB_UNKNOWN_RECORD

WILDCARD = '*:*:*:*:*:*'
WILDCARD_FILE = 'unknown_hosts_filter'
_SUFFIX_DENY = ',ignore\n'
_SUFFIX_ALLOW = '\n'


def render(key, allow):
    """Return the file content for ``key`` (a MAC or the wildcard, which
    also carries the InfiniBand record, as pxefilterd writes it)."""
    suffix = _SUFFIX_ALLOW if allow else _SUFFIX_DENY
    if key == WILDCARD:
        return key + suffix + IB_UNKNOWN_RECORD + suffix
    return key + suffix


def _state_from_size(key, size):
    """True (allow), False (deny) or None (neither form's size)."""
    if size == len(render(key, True)):
        return True
    if size == len(render(key, False)):
        return False
    return None


class InspectorLikeHostsDir:
    """A stateless hostsdir driver: the whole directory is examined on every
    sync.

    :ivar files_written: files written over the object's life.
    :ivar last: ``{'listed', 'stats', 'written'}`` of the last sync.
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.files_written = 0
        self.last = {}

    def _current(self):
        """Return ``{key: allow?}`` for every file, from sizes only."""
        current = {}
        names = os.listdir(self.path)
        for name in names:
            key = WILDCARD if name == WILDCARD_FILE else name
            st = os.stat(os.path.join(self.path, name))
            current[key] = _state_from_size(key, st.st_size)
        return current, len(names)

    def sync(self, ironic_macs, active_macs, allow_unknown):
        """Make the directory express the decision; return files written.

        :param ironic_macs: every MAC ironic knows (lowercase, colons).
        :param active_macs: MACs of nodes under inspection (allowed).
        :param allow_unknown: the state of MACs ironic does not know.
        """
        current, listed = self._current()
        desired = {WILDCARD: bool(allow_unknown)}
        for key in current:
            if key != WILDCARD and key not in ironic_macs:
                desired[key] = bool(allow_unknown)    # removed from ironic
        for mac in ironic_macs:
            desired[mac] = mac in active_macs
        written = 0
        for key, allow in desired.items():
            if current.get(key, 'missing') is allow:
                continue
            name = WILDCARD_FILE if key == WILDCARD else key
            with open(os.path.join(self.path, name), 'w') as f:
                f.write(render(key, allow))
            written += 1
        self.files_written += written
        self.last = {'listed': listed, 'stats': len(current),
                     'written': written}
        return written
