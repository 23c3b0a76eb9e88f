#!/bin/bash
# Refresh the committed pins on purpose: resolve each pins/NAME.in again
# (today's newest versions that satisfy it) into pins/NAME.txt, the exact
# set tools/setup.sh and tox install.  Then run `bash tools/test.sh` and
# commit the .txt files only if it passes.  Usage:
#   bash tools/refresh-pins.sh            # every environment
#   bash tools/refresh-pins.sh keystone   # one of them
# A package to move on its own: uv's --upgrade-package, e.g.
#   UPGRADE="--upgrade-package oslo.log" bash tools/refresh-pins.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
if [ ! -x "$uv" ]; then
    echo "refresh-pins.sh: run tools/setup.sh first (it installs uv in .venv)" >&2
    exit 1
fi
names=${*:-dev ironic keystone guest ipa min}
for name in $names; do
    in=pins/$name.in
    out=pins/$name.txt
    [ -f "$in" ] || { echo "refresh-pins.sh: no $in" >&2; exit 1; }
    # Python 3.11: Debian 12's, and what the machines run.  Without
    # --upgrade, versions already in $out are kept where they still
    # satisfy $in: a refresh moves only what it must.
    # min: each direct requirement at its lower bound (tox -e py3-min).
    resolution=highest
    [ "$name" = min ] && resolution=lowest-direct
    # shellcheck disable=SC2086  # UPGRADE is a list of flags
    (cd pins && "../$uv" pip compile --quiet --python-version 3.11 \
        --resolution "$resolution" \
        --custom-compile-command "bash tools/refresh-pins.sh $name" \
        ${UPGRADE:-} "$name.in" -o "$name.txt")
    echo "refresh-pins.sh: $out: $(grep -c '==' "$out") packages"
done
