#!/usr/bin/env bash
# Set up everything the tests need and run them (what CI runs through .ci/run).
# Extra arguments go to pytest, e.g. scripts/test.sh -m slow   (the heavy, non-CI tests)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,convert,demo
export TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1
set +e
.venv/bin/python -m pytest -q -rs "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a broken suite, not a pass, unless a
# marker selection (e.g. -m slow) legitimately selected nothing.
if [[ $rc == 5 ]]; then
  if [[ "$*" == *"-m"* ]]; then echo "test: no test matched the selection"; exit 0; fi
  echo "test: pytest collected no tests" >&2
fi
exit $rc
