#!/bin/sh
# Builds the example with g++ (no cmake): bin/minifw and the two components
# lib/libHistSvc.so and lib/libLegacyAlg.so. Rebuilds only what is stale.
set -eu
cd "$(dirname "$0")"
CXX=${CXX:-g++}
FLAGS="-std=c++17 -O2 -g -Wall -Wextra"
mkdir -p bin lib

stale() { # stale OUT SRC...: OUT is missing or older than a source
  out=$1; shift
  [ -e "$out" ] || return 0
  for s in "$@" src/minifw.h; do [ "$s" -nt "$out" ] && return 0; done
  return 1
}

if stale bin/minifw src/minifw.cpp; then
  $CXX $FLAGS -o bin/minifw src/minifw.cpp -ldl
fi
for c in HistSvc LegacyAlg; do
  if stale "lib/lib$c.so" "src/$c.cpp"; then
    $CXX $FLAGS -fPIC -shared -o "lib/lib$c.so" "src/$c.cpp" -ldl
  fi
done
