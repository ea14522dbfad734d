#!/usr/bin/env bash
# Set up and run maskwatch end to end on the bundled sample: a clip built at run time from
# scikit-image's astronaut photo (public domain) with masks drawn on some of the people.
# Alerts print as JSON lines on stdout (no broker needed). Extra arguments go to `maskwatch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec .venv/bin/maskwatch demo "$@"
