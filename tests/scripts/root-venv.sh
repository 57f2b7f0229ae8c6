#!/usr/bin/env bash
# Makes (or reuses) a Python (3.11 if there is one, else python3 >= 3.9)
# virtual environment with the ROOT
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

# ROOT's wheels are built per CPython version (3.11 when this was written,
# up to 3.13 and later since): the cached 3.11 first, else the machine's
# python3 (or a python3.X on PATH) if it is at least 3.9 and PyPI has a
# wheel for it.
python=
for p in python3.11 python3 python3.13 python3.12 python3.10 python3.9; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 9))' 2>/dev/null; then
    python="$(command -v "$p")"
    break
  fi
done
if [ -z "$python" ]; then
  found="$(command -v python3 >/dev/null 2>&1 && python3 -c 'import sys; print("python3 is %d.%d" % sys.version_info[:2])' 2>/dev/null || echo "no python3 on PATH")"
  echo "root-venv: no Python >= 3.9 interpreter ($found); ROOT's wheels need CPython 3.9 or later (3.11 is the tested one)" >&2
  exit 1
fi
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
tag="cp${version/./}"

mkdir -p "$wheels"
rm -rf "$venv"
if ! "$python" -m venv "$venv" >&2; then
  echo "root-venv: $python ($version) cannot make a virtual environment (Debian: apt-get install python$version-venv)" >&2
  exit 1
fi
if ! ls "$wheels"/[Rr][Oo][Oo][Tt]-*-"$tag"-*.whl >/dev/null 2>&1; then
  echo "root-venv: downloading the ROOT wheel for CPython $version into $wheels (once)" >&2
  if ! "$venv/bin/pip" download --quiet --only-binary=:all: --dest "$wheels" ROOT >&2; then
    echo "root-venv: PyPI has no ROOT wheel for CPython $version on this platform (or cannot be reached; see pip's message above); install Python 3.11 or point MPAUDIT_CI_CACHE at a cache holding one" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install --quiet --no-index --find-links "$wheels" ROOT >&2
"$venv/bin/python" -c 'import ROOT, os; assert os.path.exists(os.path.join(os.path.dirname(ROOT.__file__), "bin", "hadd"))' >&2
echo "root-venv: ready at $venv" >&2
echo "$venv/bin/python"
