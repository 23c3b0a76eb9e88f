"""What the daemon tells about itself: status, explain, status lines, the
reason behind a decision, and the counters of the metrics.

:class:`Report` reads the rooms of a running
:class:`pxefilterd.service.Service` and changes none of them.  Control
requests (``pxefilterd-ctl status`` and ``explain``) arrive from the control
socket's thread through a mailbox (:meth:`Report.ask`) and are answered in
the loop thread (:meth:`Report.answer_pending`), which owns what the
answers read.
"""

import dataclasses
import logging
import os
import queue
import threading

from pxefilterd import control
from pxefilterd import explain as explain_mod
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import macs
from pxefilterd import policy

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Stats:
    """Counters for status lines and metrics."""

    allowed: int = 0
    denied: int = 0
    unknown: str = 'deny'
    last_sync: float = 0.0       # wall clock of the last full listing
    last_sync_duration: float = 0.0
    last_contact: float = 0.0    # wall clock of the last complete poll
    syncs: int = 0
    api_errors: int = 0
    heals: int = 0
    dnsmasq_running: bool = False
    dnsmasq_state: str = 'stopped'     # the supervisor's status
    dnsmasq_detail: str = ''
    dnsmasq_starts: int = 0
    failed_closed: bool = False
    ports: int = 0
    inspected: int = 0


class Report:
    """The answers of one service.

    :param svc: the :class:`pxefilterd.service.Service`.
    """

    def __init__(self, svc):
        self._svc = svc
        self._requests = queue.SimpleQueue()

    # What the answers read: the service's rooms.
    view = property(lambda self: self._svc.view)
    store = property(lambda self: self._svc.store)
    writer = property(lambda self: self._svc.writer)
    decisions = property(lambda self: self._svc.decisions)
    settings = property(lambda self: self._svc.settings)
    _ready = property(lambda self: self._svc.ready)
    _inspected = property(lambda self: self._svc.inspected)

    @property
    def stats(self):
        """The counters now, each read from the room that keeps it."""
        svc = self._svc
        sup, feeds = svc.supervisor, svc.intake
        allowed, denied, unknown = svc.tally
        return Stats(
            allowed=allowed, denied=denied, unknown=unknown,
            last_sync=feeds.last_sync,
            last_sync_duration=feeds.last_sync_duration,
            last_contact=feeds.last_contact, syncs=feeds.syncs,
            api_errors=feeds.api_errors, heals=svc.helpers.heals,
            dnsmasq_running=sup.running, dnsmasq_state=sup.status,
            dnsmasq_detail=sup.detail, dnsmasq_starts=sup.starts,
            failed_closed=feeds.failed_closed,
            ports=len(svc.view.ports), inspected=len(svc.inspected))

    # -- the mailbox ----------------------------------------------------------

    def ask(self, request, timeout=control.CLIENT_TIMEOUT - 1.0):
        """Have the loop thread answer a control request; wait for it.

        Called by the control socket's thread.  The loop answers at its
        next wake-up (at once: this wakes it).
        """
        slot = [None, threading.Event()]
        self._requests.put((request, slot))
        self._svc.wake()
        if not slot[1].wait(timeout):
            return {'ok': False, 'error': 'the daemon did not answer within '
                    '%.0f s' % timeout}
        return slot[0]

    def answer_pending(self):
        """Answer the requests waiting in the mailbox (loop thread)."""
        while True:
            try:
                request, slot = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                slot[0] = self.answer(request)
            except Exception as exc:
                LOG.exception('Control request %r failed', request)
                slot[0] = {'ok': False, 'error': 'internal error: %r' % (exc,)}
            slot[1].set()

    # -- the answers ----------------------------------------------------------

    def answer(self, request):
        """Answer one control request (a dict); return a JSON-able dict."""
        command = request.get('command')
        if command == 'status':
            return dict(self.status(), ok=True)
        if command == 'explain':
            raw = request.get('key')
            key = (macs.WILDCARD if raw in (macs.WILDCARD, 'unknown')
                   else macs.normalize_key(raw))
            if key is None:
                return {'ok': False, 'error': 'not a MAC address or client '
                        'id: %.60r' % (raw,)}
            return dict(self.explain(key), ok=True)
        return {'ok': False, 'error': 'unknown command %.40r' % (command,)}

    def status(self):
        """What the daemon knows now, as plain values."""
        s = self.stats
        return {
            'pid': os.getpid(),
            'ready': self._ready,
            'allowed': s.allowed, 'denied': s.denied, 'unknown': s.unknown,
            'ports': s.ports, 'inspected_nodes': s.inspected,
            'failed_closed': s.failed_closed,
            'last_contact': s.last_contact or None,
            'contact_age': self._svc.intake.contact_age(),
            'max_stale_seconds': self.settings.max_stale_seconds,
            'last_listing': s.last_sync or None,
            'api_errors': s.api_errors, 'heals': s.heals,
            'dnsmasq': {'state': s.dnsmasq_state,
                        'detail': s.dnsmasq_detail,
                        'starts': s.dnsmasq_starts,
                        'child': self._svc.child is not None},
            'pending_writes': self.writer.pending,
            'reload_failures': self.writer.reload_failures,
        }

    def explain(self, key):
        """Why ``key`` (a normalised MAC or client id, or the wildcard) gets
        its answer.

        Returns the decision and its reason, the ironic facts behind it,
        what pxefilterd wrote for it, and when it last changed.
        """
        reason = self.reason(key)
        facts = explain_mod.ironic_facts(
            self.view.port_of(key), self.view.nodes, len(self._inspected),
            self.settings.options)
        written = self.store.index.get(key)
        record = hostsdir_mod.file_name(key) if written else None
        if written is None and key in self.store.base:
            written, record = self.store.base[key], 'base hosts file'
        # an unknown MAC follows the unknown policy: its last change
        last = self.decisions.last_change(
            key, macs.WILDCARD if facts.get('port') is None else None)
        return explain_mod.answer(
            key, reason, facts, last,
            written=written.value if written else None,
            record=record,
            records=explain_mod.records_mode(self.settings.options),
            failed_closed=self.stats.failed_closed,
            last_contact=self.stats.last_contact or None,
            dnsmasq={'state': self.stats.dnsmasq_state,
                     'detail': self.stats.dnsmasq_detail,
                     'foreign_records': self.writer.foreign_live()},
            pid=os.getpid())

    def reason(self, key):
        """Return the :class:`policy.Reason` for a MAC or the wildcard."""
        if self.stats.failed_closed:
            return policy.Reason(
                policy.Action.DENY, 'fail-closed',
                'ironic has not answered for max_stale_seconds: every MAC '
                'is denied', option='[pxe_filter] max_stale_seconds')
        if key == macs.WILDCARD:
            return policy.unknown_reason(self._inspected,
                                         self.settings.options)
        return policy.explain(key, self.view.snapshot(),
                              self.settings.options)

    def status_line(self):
        s = self.stats
        return ('%d allowed, %d denied, unknown MACs %s%s' % (
            s.allowed, s.denied, s.unknown,
            ', FAILED CLOSED' if s.failed_closed else ''))
