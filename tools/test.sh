#!/bin/bash
# The test command: install what is needed, then run every suite through tox
# (lint, unit on the pins and on the lowest allowed versions, functional,
# the docs and release notes builds, integration with real ironic +
# dnsmasq + DHCP clients) and a smoke run of the benchmark (numbers printed, nothing
# asserted on time; "tox -e bench" runs the whole quick mode).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PXEFILTERD_IRONIC_VENV=${PXEFILTERD_IRONIC_VENV:-$(pwd)/.venv-ironic}
export PXEFILTERD_KEYSTONE_VENV=${PXEFILTERD_KEYSTONE_VENV:-$(pwd)/.venv-keystone}
# tox's own build environment (pbr, setuptools for pxefilterd's wheel) has
# no deps= to hold it to the pins; uv takes them from here.
UV_CONSTRAINT=$(pwd)/pins/dev.txt
export UV_CONSTRAINT
# What the long integration tests boot, built from pins (they need the
# network) once, then cached by their inputs: the systemd test's Debian 12
# guest root and wheels (tools/guest-root.sh), the inspection ramdisk
# (tools/ramdisk/build.sh) and the base image of container/Containerfile
# (tools/container-base.sh).  Built beside the lint, unit and functional
# suites, not before them: a cold build takes minutes.
images_log=$(mktemp)
(bash tools/guest-root.sh root && bash tools/guest-root.sh wheels \
    && bash tools/container-base.sh \
    && .venv/bin/python -m pxefilterd_harness.ramdisk) >"$images_log" 2>&1 &
images=$!
trap 'kill "$images" 2>/dev/null || true; rm -f "$images_log"' EXIT
# The documentation (html and man pages) and the release notes build beside
# them too: warnings are errors in both.
.venv/bin/tox -e pep8,py3,functional,docs,releasenotes "$@"
if ! wait "$images"; then
    cat "$images_log" >&2
    echo "test.sh: building the test images failed (log above)" >&2
    exit 1
fi
# The unit tests on the lowest versions requirements.txt allows
# (pins/min.txt), beside the integration suite: that one mostly waits on
# real services (about 40 % of two cores in CI), and one worker fits the
# unit tests in its idle time (run after it, they added 95 s).
min_log=$(mktemp)
trap 'kill "$images" "${py3min:-}" 2>/dev/null || true; rm -f "$images_log" "$min_log"' EXIT
# (tox.ini gives it pins/min.txt, and its own package environment.)
.venv/bin/tox -e py3-min "$@" -- -n 1 >"$min_log" 2>&1 &
py3min=$!
.venv/bin/tox -e integration "$@"
if ! wait "$py3min"; then
    cat "$min_log" >&2
    echo "test.sh: tox -e py3-min failed (log above)" >&2
    exit 1
fi
tail -n 3 "$min_log"
# The benchmark's quick local family, so that the benchmark keeps working:
# numbers printed (and bench-results.json), nothing asserted on time.
# (The integration suite runs the real daemon, ironic and dnsmasq already.)
.venv/bin/tox -e bench -- --quick --only local --json bench-results.json
