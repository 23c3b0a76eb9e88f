"""pxefilterd-bench: performance figures for pxefilterd on real services.

Development only: part of the ``pxefilterd-harness`` distribution in the
repository's ``harness/`` directory, never of the runtime package.

Scenario families (one module each):

- :mod:`.local`         -- hostsdir costs, pxefilterd vs an inspector-like
  baseline (:mod:`.baseline`), in this process, on the same data;
- :mod:`.api`           -- full port listing against a real ironic: server
  time, pxefilterd's raw-JSON client, openstacksdk objects; API cost per
  minute;
- :mod:`.dnsmasq_bench` -- dnsmasq cold start / SIGHUP per layout, bursts
  of inotify events and lost updates;
- :mod:`.latency`       -- allow/deny latency and memory of the real daemon.

:mod:`.report` holds the result rows, the table and the JSON writer;
:mod:`.cli` the command line.  Nothing here asserts on time: figures are
reported, targets are marked met or not.

This package is imported inside the client network namespace too (see
:mod:`.prober`), so it imports nothing at package level.
"""
