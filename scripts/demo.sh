#!/usr/bin/env bash
# Set up and run maskwatch end to end on the bundled sample: a clip built at run time from
# scikit-image's astronaut photo (public domain) with masks drawn on some of the people.
# Alerts print as JSON lines on stdout (no broker needed); a summary table follows on stderr, and
# demo-out/ gets the annotated clip and a contact sheet of the people alerted. Extra arguments go to
# `maskwatch demo` (--quiet: the JSON lines only; --preview: watch it live in a browser; --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo >&2   # stdout is for the JSON alert lines only
exec .venv/bin/maskwatch demo "$@"
