"""The decision log: each change of a key's decision logged once, with its
reason, and the last change of each key remembered (``pxefilterd-ctl
explain`` shows it).

Its own logger, ``pxefilterd.decision``, so that it can be filtered (with
journald: ``LOGGER_NAME=pxefilterd.decision``).
"""

import collections
import logging
import time

from pxefilterd import macs
from pxefilterd import policy

LOG = logging.getLogger('pxefilterd.decision')

#: Changes logged one by one per step; the rest are summed up.
LOG_LIMIT = 1000
#: Last changes kept (for explain).
HISTORY_LIMIT = 20000


def label(key):
    """How a key is named in the log."""
    if key == macs.WILDCARD:
        return 'Unknown MACs'
    return ('Client %s' if macs.is_client_id(key) else 'MAC %s') % key


class DecisionLog:
    """Compares each new decision with the last one and logs the changes.

    :ivar history: key -> ``(unix time, before, after, reason, rule)`` of
        its last change, oldest first, at most :data:`HISTORY_LIMIT`.
    """

    def __init__(self, clock=time.time):
        self._decided = {}      # key -> Action last decided
        self._conflicts = {}    # key -> its claims, as last logged
        self._clock = clock
        self.history = collections.OrderedDict()

    def record(self, desired, reason, notes=None):
        """Log what changed since the last call.

        :param desired: the :class:`policy.Desired` decided now.
        :param reason: callable(key) -> :class:`policy.Reason`, asked for
            the keys that changed (within :data:`LOG_LIMIT`).
        :param notes: key -> what happened to it (e.g. "its node X was
            deleted from ironic"), put in front of the reason.
        """
        notes = notes or {}
        self._log_conflicts(desired.conflicts)
        changes = policy.diff(self._decided, desired, desired.macs)
        if changes.get(macs.WILDCARD) is policy.Action.ALLOW:
            # (logged first, whatever order the files are written in)
            changes = {macs.WILDCARD: changes.pop(macs.WILDCARD), **changes}
        if not changes:
            return
        previous = self._decided
        self._decided = dict(desired.macs)
        self._decided[macs.WILDCARD] = desired.unknown
        if not previous:
            return     # the start-up state: "Wrote N file(s)" says it
        unknown_before = previous[macs.WILDCARD]
        now = self._clock()
        logged = 0
        summed = collections.Counter()
        for key, action in changes.items():
            before = previous.get(key, unknown_before)
            if before is action:
                continue    # a new file saying what the wildcard said
            if logged >= LOG_LIMIT:
                summed[action.value] += 1
                continue
            why = reason(key)
            text = why.text
            if key in notes:
                text = '%s; %s' % (notes[key], text)
            self.history[key] = (now, before.value, action.value, text,
                                 why.rule)
            self.history.move_to_end(key)
            LOG.info('%s: %s -> %s: %s [rule=%s]', label(key), before.value,
                     action.value, text, why.rule)
            logged += 1
        while len(self.history) > HISTORY_LIMIT:
            self.history.popitem(last=False)
        if summed:
            LOG.info('... and %d more decision change(s) in this step (%s)',
                     sum(summed.values()),
                     ', '.join('%d to %s' % (n, a)
                               for a, n in sorted(summed.items())))

    def _log_conflicts(self, conflicts):
        """Log each key that two or more ports claim once when its claims
        appear or change, and once when it has one claim again.  None
        (a decision not made from ironic's answers) changes nothing."""
        if conflicts is None:
            return
        for key, claims in conflicts.items():
            if self._conflicts.get(key) != claims:
                LOG.warning('%s: %s [rule=conflict]', label(key),
                            policy.conflict_reason(claims).text)
        for key in self._conflicts.keys() - conflicts.keys():
            LOG.info('%s: no longer claimed by more than one port', label(key))
        self._conflicts = dict(conflicts)

    def last_change(self, key, default_key=None):
        """The last change of ``key`` as a dict (or of ``default_key``
        when ``key`` has none), or None."""
        last = self.history.get(key)
        if last is None and default_key is not None:
            last = self.history.get(default_key)
        if last is None:
            return None
        return {'at': last[0], 'from': last[1], 'to': last[2],
                'reason': last[3], 'rule': last[4]}
