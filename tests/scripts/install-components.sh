#!/usr/bin/env bash
# Installs the real components the launcher and ROOT tests run (single-node
# Slurm, munge, Open MPI, Python's venv) when they are missing. Runs apt-get update once, and only
# when something has to be installed. Safe to run again on a warm machine.
set -euo pipefail

need=()
for tool in slurmctld:slurm-wlm slurmd:slurm-wlm srun:slurm-wlm munged:munge mpirun:openmpi-bin; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "${tool%%:*}" >/dev/null 2>&1 \
    || need+=("${tool##*:}")
done
# tests/scripts/root-venv.sh needs `python3 -m venv` (Debian splits it out).
if ! command -v python3.11 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "install-components: slurm-wlm, munge, openmpi-bin and python3-venv present"
  exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "install-components: installing ${need[*]}"
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
# Once per CI run: .ci/run may just have updated the lists for its own tools.
if ! find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | grep -q .; then
  $SUDO apt-get update -qq
fi
# The packages' own services are not wanted (no systemd here, and the tests
# start their own daemons in a scratch directory): policy-rc.d refuses them.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
