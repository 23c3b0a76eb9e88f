"""Polling helper for tests: wait for a condition with a deadline."""

import time

import pytest


def wait_for(predicate, timeout=15.0, what='condition'):
    """Return once ``predicate()`` is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    pytest.fail('timed out waiting for %s' % what)
