#!/usr/bin/env bash
# Installs moto's server, the Cloud Map of clusterset's tests, from PyPI at the
# version the tests were written against, unless it is already there, and
# applies hack/moto/*.patch to it.
#
# Why a patch: moto 5.2.1 (and 5.2.5, the newest on PyPI) ignores the Filters
# of ListServices and ListNamespaces. Real Cloud Map applies them, and the AWS
# Cloud Map MCS controller depends on the NAMESPACE_ID filter: without it, it
# sees the services of every namespace in each one. The patch makes moto apply
# the filters clusterset and the AWS controller use, and refuse the others
# with InvalidInput rather than ignore them; docs/cloudmap.md says which.
set -euo pipefail
MOTO_VERSION=5.2.1
here=$(cd "$(dirname "$0")" && pwd)

if command -v moto_server >/dev/null 2>&1 && python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "moto $MOTO_VERSION already installed: $(command -v moto_server)"
else
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  # pyenv installs console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  command -v moto_server >/dev/null || { echo "moto_server is not on PATH after pip install" >&2; exit 1; }
  echo "moto $MOTO_VERSION installed: $(command -v moto_server)"
fi

command -v patch >/dev/null || { echo "hack/install-moto.sh needs patch(1): apt-get install patch" >&2; exit 1; }
site() { python3 -c 'import moto, os; print(os.path.dirname(os.path.dirname(moto.__file__)))'; }
for p in "$here"/moto/*.patch; do
  if patch -d "$(site)" -p1 -R --dry-run --silent <"$p" >/dev/null 2>&1; then
    echo "moto patch $(basename "$p") already applied"
    continue
  fi
  if ! patch -d "$(site)" -p1 --forward --dry-run --silent <"$p" >/dev/null 2>&1; then
    # Another version of the patch is applied: start from a clean moto.
    echo "moto carries another version of $(basename "$p"); reinstalling moto $MOTO_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "moto==$MOTO_VERSION"
  fi
  patch -d "$(site)" -p1 --forward --no-backup-if-mismatch --silent <"$p"
  echo "moto patch $(basename "$p") applied in $(site)"
done
