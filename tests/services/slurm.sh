#!/usr/bin/env bash
# A real single-node Slurm for the `slurm`-marked tests (Debian slurm-wlm + munge, installed
# here when missing). Nothing here survives a reboot or touches /etc/slurm: the config lives
# in $MSD_SLURM_DIR (default /run/msd-slurm) and clients find it through SLURM_CONF.
#
#   tests/services/slurm.sh start    # install if missing, start munged/slurmctld/slurmd, wait for the node
#   tests/services/slurm.sh stop     # stop exactly the daemons this script started (by PID)
#   tests/services/slurm.sh status   # sinfo
#   export SLURM_CONF=/run/msd-slurm/slurm.conf   # then sbatch/squeue/submitit find the cluster
#
# Needs root (daemons and spool dirs). Exit code 3 = cannot start here (the tests skip).
set -euo pipefail

DIR=${MSD_SLURM_DIR:-/run/msd-slurm}
CONF=$DIR/slurm.conf
PIDS=$DIR/started.pids
export SLURM_CONF=$CONF

die() { echo "slurm.sh: $*" >&2; exit 3; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm-wlm is not installed and apt-get is not available"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

drain_jobs() {
  # Jobs still in the queue when slurmd dies leave slurmstepd ghosts: cancel, wait (bounded).
  [ -f "$CONF" ] || return 0
  timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null || echo unreachable)" ] && return 0
    sleep 0.5
  done
}

stop_started() {
  [ -f "$PIDS" ] || return 0
  drain_jobs
  # Reverse order: slurmd, slurmctld, then munged.
  # shellcheck disable=SC2034 # name documents the line
  tac "$PIDS" | while read -r name pid; do
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$PIDS"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root to start slurmctld/slurmd"
  install_packages
  mkdir -p "$DIR"
  chmod 755 "$DIR"
  # slurmctld runs as the slurm user: it must reach the config (a 0700 parent dir, like
  # pytest's tmp root, would leave it unable to start and every client waiting).
  runuser -u slurm -- test -x "$DIR" || die "the slurm user cannot reach $DIR; use a world-readable MSD_SLURM_DIR"
  stop_started

  # munge: key, socket dir, daemon (reuse one that is already running).
  [ -f /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; } \
    || die "cannot create the munge key"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  if ! alive "$(cat /run/munge/munged.pid 2>/dev/null || true)"; then
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 || die "munged did not start"
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/munged.pid)" >> "$PIDS"
  fi

  # Fresh spool dirs: ghost jobs of a previous (killed) cluster must not come back.
  rm -rf /var/spool/slurmctld /var/spool/slurmd
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown slurm:slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm

  local host mem cpus
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') - 512 ))
  cat > "$CONF" <<CONF
ClusterName=msdlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  chmod 644 "$CONF"

  slurmctld -f "$CONF" </dev/null >/dev/null 2>&1 || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  for _ in $(seq 50); do [ -s "$DIR/slurmctld.pid" ] && break; sleep 0.1; done
  [ -s "$DIR/slurmctld.pid" ] || die "slurmctld wrote no PID file (see /var/log/slurm/slurmctld.log)"
  echo "slurmctld $(cat "$DIR/slurmctld.pid")" >> "$PIDS"
  slurmd -f "$CONF" </dev/null >/dev/null 2>&1 || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
  for _ in $(seq 50); do [ -s "$DIR/slurmd.pid" ] && break; sleep 0.1; done
  [ -s "$DIR/slurmd.pid" ] || die "slurmd wrote no PID file (see /var/log/slurm/slurmd.log)"
  echo "slurmd $(cat "$DIR/slurmd.pid")" >> "$PIDS"

  local deadline=$(( $(date +%s) + 30 )) state=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(timeout 5 sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in idle|mixed|allocated) echo "slurm up: node $host $state; export SLURM_CONF=$CONF"; return 0;; esac
    sleep 0.2
  done
  stop_started
  die "the node did not become idle (sinfo: '${state:-none}'); see /var/log/slurm/"
}

case "${1:-status}" in
  start) start ;;
  stop) stop_started; echo "slurm stopped" ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
