#!/usr/bin/env bash
# Worker $MPAUDIT_WORKER of a legacy job: a declared per-worker output
# (hist-<k>.txt) and a rogue shared one (result.txt).
set -eu
k=${MPAUDIT_WORKER:-0}
seq 1 100 | awk -v k="$k" '$1 % 4 == k' > "hist-$k.txt"
echo "worker $k done" > result.txt
