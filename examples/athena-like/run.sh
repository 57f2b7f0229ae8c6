#!/bin/sh
# Builds the example (g++) and runs it under mpaudit from a clean state.
#   examples/athena-like/run.sh [mpaudit run options, e.g. --format json]
# mpaudit: $MPAUDIT, else target/release/mpaudit of this checkout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
"$here/build.sh"
mpaudit=${MPAUDIT:-$here/../../target/release/mpaudit}
cd "$here"
# The previous run's outputs: merges never overwrite an existing file.
rm -rf mpaudit-workers mpaudit-logs hist.txt summary.log debug-dump.txt
exec "$mpaudit" run job.toml "$@"
