"""Exponential backoff, the one way pxefilterd waits after failures.

Every retry in the daemon (a feed cycle, one node's port fetch, a dnsmasq
start, a reload) waits ``first``, then twice that, ... up to ``cap``
seconds after each failure in a row, and starts again from ``first`` after
a success.  Pure: the caller owns the clock.
"""

import dataclasses


def delay(failures, cap, first=1.0):
    """Seconds to wait after ``failures`` failures in a row.

    ``0`` for no failure; ``first`` after one, doubling per failure, never
    more than ``cap``.
    """
    if failures <= 0:
        return 0.0
    # The exponent is bounded so that a long outage cannot overflow a float.
    return min(cap, first * 2.0 ** min(failures - 1, 64))


@dataclasses.dataclass
class Backoff:
    """Failures in a row and the wait they call for."""

    cap: float
    first: float = 1.0
    failures: int = 0

    def failed(self):
        """Count one more failure; return the seconds to wait now."""
        self.failures += 1
        return self.wait

    def succeeded(self):
        self.failures = 0

    @property
    def wait(self):
        """Seconds to wait after the failures counted so far (0 if none)."""
        return delay(self.failures, self.cap, self.first)
