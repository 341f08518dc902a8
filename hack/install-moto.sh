#!/usr/bin/env bash
# Installs moto's server, the Cloud Map of clusterset's tests, from PyPI at the
# version the tests were written against, unless it is already there.
set -euo pipefail
MOTO_VERSION=5.2.1
if command -v moto_server >/dev/null 2>&1 && python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "moto $MOTO_VERSION already installed: $(command -v moto_server)"
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
# pyenv installs console scripts behind shims that need a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
command -v moto_server >/dev/null || { echo "moto_server is not on PATH after pip install" >&2; exit 1; }
echo "moto $MOTO_VERSION installed: $(command -v moto_server)"
