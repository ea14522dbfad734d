#!/usr/bin/env bash
# Set up a virtual environment for maskwatch in .venv (idempotent).
#   scripts/setup.sh [EXTRAS]     e.g. scripts/setup.sh demo   or   scripts/setup.sh test,convert
# Installs Debian packages it needs when run as root on Debian (python3-venv, mosquitto for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"

need_apt=()
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [[ ",$extras," == *",test,"* ]]; then
  export PATH="$PATH:/usr/sbin:/usr/local/sbin"   # mosquitto installs to /usr/sbin
  command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  [[ -x /usr/bin/chromium ]] || need_apt+=(chromium)               # the labelling page's browser test
  [[ -x /usr/bin/chromedriver ]] || need_apt+=(chromium-driver)
fi
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # The Debian package enables a broker on :1883; the tests start their own on a free port.
    if [[ " ${need_apt[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
  else
    echo "setup: please install: ${need_apt[*]} (needs root and apt-get)" >&2
    exit 1
  fi
fi

[[ -x .venv/bin/python ]] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt: the versions the README's and model card's figures were measured with
if [[ -n "$extras" ]]; then
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"
else
  .venv/bin/python -m pip install -q -c constraints.txt -e .
fi
echo "setup: .venv ready (extras: ${extras:-none})"
