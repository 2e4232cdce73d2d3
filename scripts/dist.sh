#!/usr/bin/env bash
# Build the sdist and the wheel into DIST_DIR (default dist/) and check them.
# The source tree is not written to: hatchling builds from it into DIST_DIR only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DIST_DIR=${DIST_DIR:-dist}
rm -rf "$DIST_DIR"
"$PYTHON" -m build --sdist --wheel --outdir "$DIST_DIR" . >/dev/null
"$PYTHON" scripts/check_dist.py "$DIST_DIR"
