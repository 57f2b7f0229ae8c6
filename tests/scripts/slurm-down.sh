#!/usr/bin/env bash
# Stops what slurm-up.sh started in STATE_DIR (slurmd, slurmctld, munged)
# and removes its socket directory. Safe to run twice.
#   tests/scripts/slurm-down.sh STATE_DIR
set -uo pipefail
state="${1:?usage: slurm-down.sh STATE_DIR}"
stop() {
  local pidfile="$1" pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
stop "$state/slurmd.pid"
stop "$state/slurmctld.pid"
stop "$state/munge/munged.pid"
if [ -s "$state/munge-sockdir" ]; then
  rm -rf "$(cat "$state/munge-sockdir")"
  rm -f "$state/munge-sockdir"
fi
