#!/bin/bash
# The test command: install what is needed, then run every suite through tox
# (lint, unit, functional, integration with real ironic + dnsmasq + DHCP
# clients) and the quick benchmark (numbers printed, nothing asserted on time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PXEFILTERD_IRONIC_VENV=${PXEFILTERD_IRONIC_VENV:-$(pwd)/.venv-ironic}
.venv/bin/tox -e pep8,py3,functional,integration "$@"
# The benchmark in quick mode: numbers printed (and bench-results.json),
# nothing asserted on time.
.venv/bin/tox -e bench
