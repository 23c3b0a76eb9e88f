#!/bin/bash
# The test command: install what is needed, then run every suite through tox
# (lint, unit, functional, integration with real ironic + dnsmasq + DHCP
# clients) and a smoke run of the benchmark (numbers printed, nothing
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
.venv/bin/tox -e pep8,py3,functional,integration "$@"
# Two benchmark families, so that the benchmark keeps working: numbers
# printed (and bench-results.json), nothing asserted on time.
.venv/bin/tox -e bench -- --quick --only local,latency --json bench-results.json
