"""Integration-test harness for pxefilterd: real ironic, dnsmasq and DHCP.

Development only: part of the ``pxefilterd-harness`` distribution in the
repository's ``harness/`` directory, never of the runtime package.

The modules here are plain Python (no pytest import) so that they can be used
from pytest fixtures and from ad-hoc demo or benchmark scripts alike:

- :mod:`.ironic`     -- a standalone ironic (API + conductor, SQLite).
- :mod:`.netns`      -- a pair of network namespaces joined by a veth pair.
- :mod:`.dnsmasq`    -- a real dnsmasq serving DHCP in the server namespace,
  and :class:`.dnsmasq.HostsDirWriter` to write hostsdir files atomically.
- :mod:`.dhcp_probe` -- raw DHCPDISCOVER probe (fast) and ISC dhclient (real
  client cross-check), both run inside the client namespace.
- :mod:`.preflight`  -- why a test cannot run here (not root, missing tools).

Everything a helper starts it also stops, by PID, with timeouts.
"""
