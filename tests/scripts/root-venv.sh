#!/usr/bin/env bash
# Makes (or reuses) a Python 3.11 virtual environment with the ROOT
# project's wheel from PyPI, cached under target/ so that CI downloads the
# ~250 MB wheel once: target/ci-cache/root-wheels holds the downloaded
# wheels, target/ci-cache/root-venv the environment. Prints the venv's
# python on the last line of stdout.
#   tests/scripts/root-venv.sh [VENV_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${MPAUDIT_CI_CACHE:-$repo/target/ci-cache}"
venv="${1:-$cache/root-venv}"
wheels="$cache/root-wheels"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import ROOT' >/dev/null 2>&1; then
  echo "root-venv: reusing $venv" >&2
  echo "$venv/bin/python"
  exit 0
fi

python=
for p in python3.11 "$(command -v python3 || true)"; do
  [ -n "$p" ] || continue
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    python="$p"
    break
  fi
done
if [ -z "$python" ]; then
  echo "root-venv: no Python 3.11 interpreter (the ROOT wheel is built for CPython 3.11)" >&2
  exit 1
fi

mkdir -p "$wheels"
rm -rf "$venv"
"$python" -m venv "$venv"
if ! ls "$wheels"/ROOT-*.whl >/dev/null 2>&1 && ! ls "$wheels"/root-*.whl >/dev/null 2>&1; then
  echo "root-venv: downloading the ROOT wheel into $wheels (once)" >&2
  "$venv/bin/pip" download --quiet --dest "$wheels" ROOT >&2
fi
"$venv/bin/pip" install --quiet --no-index --find-links "$wheels" ROOT >&2
"$venv/bin/python" -c 'import ROOT, os; assert os.path.exists(os.path.join(os.path.dirname(ROOT.__file__), "bin", "hadd"))' >&2
echo "root-venv: ready at $venv" >&2
echo "$venv/bin/python"
