#!/bin/bash
# The main job: install what is needed, then run the demo (a real ironic,
# dnsmasq in a network namespace and pxefilterd; shows machines being
# allowed and denied PXE boot).  Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PXEFILTERD_IRONIC_VENV=${PXEFILTERD_IRONIC_VENV:-$(pwd)/.venv-ironic}
exec .venv/bin/python -m pxefilterd_harness.demo "$@"
