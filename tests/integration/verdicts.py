"""Boot verdicts from real DHCP answers: who gets an offer, and waiting
until exactly the expected MACs do."""

import time

import pytest

from pxefilterd_harness.dnsmasq import BOOT_FILE

UNKNOWN = '52:54:00:ee:ee:01'


def mac(node, port=0):
    return '52:54:00:%02x:%02x:%02x' % (node // 256, node % 256, 0x10 + port)


def offered(probe, macs):
    """Return the set of MACs that got a PXE offer."""
    result = probe(list(macs), timeout=1.0, retries=2)
    for m in macs:
        if result[m].offer:
            assert result[m].file == BOOT_FILE
    return {m for m in macs if result[m].offer}


def eventually(probe, allowed, denied, timeout=15.0):
    """Wait until exactly ``allowed`` (of allowed|denied) get offers."""
    allowed, denied = set(allowed), set(denied)
    deadline = time.monotonic() + timeout
    while True:
        got = offered(probe, allowed | denied)
        if got == allowed:
            return
        if time.monotonic() > deadline:
            pytest.fail('offers to %s, expected exactly %s'
                        % (sorted(got), sorted(allowed)))
        time.sleep(0.2)
