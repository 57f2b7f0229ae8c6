#!/bin/sh
# Runs the example under mpaudit from a clean state, with the ROOT wheel's
# python and hadd first on PATH.
#   examples/root-histos/run.sh [mpaudit run options]
# ROOT: $ROOT_PYTHON (a python that can `import ROOT`), else the venv that
# tests/scripts/root-venv.sh makes or reuses under target/ci-cache/.
# mpaudit: $MPAUDIT, else target/release/mpaudit of this checkout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${ROOT_PYTHON:-$("$here/../../tests/scripts/root-venv.sh" | tail -n 1)}
rootbin=$("$python" -c 'import os, ROOT; print(os.path.join(os.path.dirname(ROOT.__file__), "bin"))' 2>/dev/null)
PATH="$(dirname "$python"):$rootbin:$PATH"
export PATH
mpaudit=${MPAUDIT:-$here/../../target/release/mpaudit}
cd "$here"
# The previous run's outputs: merges never overwrite an existing file.
rm -rf mpaudit-workers mpaudit-logs hist.root worker-*.root
exec "$mpaudit" run job.toml "$@"
