#!/usr/bin/env bash
# Brings up a single-node Slurm for the local host in a fresh state
# directory, with its own munged, ports and spool, so that several can run
# side by side (parallel tests) and nothing outside STATE_DIR (and a short
# socket directory under /tmp) is touched. Stop it with slurm-down.sh.
#   tests/scripts/slurm-up.sh STATE_DIR [CTLD_PORT SLURMD_PORT]
# On success prints `SLURM_CONF=<path>` as the last line of stdout: every
# Slurm command (srun, sbatch, sinfo) must see that variable.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
state="${1:?usage: slurm-up.sh STATE_DIR [CTLD_PORT SLURMD_PORT]}"
ctld_port="${2:-6817}"
slurmd_port="${3:-6818}"
deadline_s="${MPAUDIT_SLURM_DEADLINE:-90}"

for tool in munged mungekey slurmctld slurmd scontrol sinfo; do
  command -v "$tool" >/dev/null || { echo "slurm-up: $tool not found (run tests/scripts/install-components.sh)" >&2; exit 1; }
done

mkdir -p "$state"
state="$(cd "$state" && pwd)"
if [ -e "$state/slurm.conf" ]; then
  echo "slurm-up: $state is not fresh (slurm.conf exists)" >&2
  exit 1
fi
mkdir -p "$state/ctld" "$state/munge"
# Unix socket paths are limited to 108 bytes: munged's socket and slurmd's
# spool (which holds the step sockets) live in a short directory of their
# own, remembered for slurm-down.sh.
sockdir="$(mktemp -d /tmp/mpaudit-slurm.XXXXXX)"
echo "$sockdir" > "$state/munge-sockdir"
mkdir -p "$sockdir/spool"
socket="$sockdir/munge.socket"

# munge: a key of our own, a daemon of our own.
mungekey --create --keyfile="$state/munge/munge.key" >/dev/null 2>&1 \
  || dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
chmod 0600 "$state/munge/munge.key"
munged --force --key-file="$state/munge/munge.key" --socket="$socket" \
  --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" \
  --seed-file="$state/munge/munged.seed"
munge --socket="$socket" -n | unmunge --socket="$socket" >/dev/null

host="$(hostname -s)"
# The node line must match what slurmd detects, or the node stays `inval`.
node_line="$(slurmd -C | grep '^NodeName=' | sed -e "s/^NodeName=[^ ]*/NodeName=$host/" -e 's/ UpTime=.*//')"
cat > "$state/slurm.conf" <<CONF
ClusterName=mpaudit
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$sockdir/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
$node_line
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$state/slurm.conf"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

start=$(date +%s)
resumed=0
while :; do
  node_state="$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true)"
  case "$node_state" in
    idle) break ;;
    *drain*|inval*|down*)
      if [ $resumed -lt 3 ]; then
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        resumed=$((resumed + 1))
      fi ;;
  esac
  if [ $(( $(date +%s) - start )) -ge "$deadline_s" ]; then
    echo "slurm-up: node $host not idle after ${deadline_s}s (state: ${node_state:-none})" >&2
    tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "slurm-up: node $host idle ($state)" >&2
echo "SLURM_CONF=$SLURM_CONF"
