#!/usr/bin/env bash
# Start (or reuse) a single-node Slurm cluster on this machine for the Slurm backend's tests, as
# root and without systemd (Debian's slurm-wlm 22.05), and print its partition name. Installs
# Debian's packages when they are missing. Nothing but the partition name goes to stdout.
#   scripts/slurm.sh start   -> prints debug
#   scripts/slurm.sh stop
#   scripts/slurm.sh status   (exit 0 when its daemons are running)
# The node declares CPUs=16 whatever `nproc` says (SlurmdParameters=config_overrides), so many
# one-CPU test jobs run at once on a small machine. Finished jobs' state and usage are written to
# /var/log/slurm/jobcomp.txt (jobcomp/filetxt), since there is no slurmdbd.
set -euo pipefail
PARTITION=${SUANLI_SLURM_PARTITION:-debug}
NODE_CPUS=${SUANLI_SLURM_CPUS:-16}
CONF=/etc/slurm/slurm.conf
LOG=/var/log/slurm
PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge)

fail() {
  echo "slurm.sh: $*" >&2
  exit 1
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s until it succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "${SECONDS}" -lt "${deadline}" ] || fail "timed out waiting for ${what} (see ${LOG}/)"
    sleep 0.2
  done
}

installed() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null
}

install_packages() {
  installed && return 0
  export DEBIAN_FRONTEND=noninteractive
  echo "slurm.sh: installing ${PACKAGES[*]} from Debian's packages..." >&2
  # shellcheck source=scripts/apt.sh
  . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  apt_install "${PACKAGES[@]}" 2>/tmp/suanli-slurm-apt.log ||
    fail "apt-get install ${PACKAGES[*]} failed (see /tmp/suanli-slurm-apt.log)"
  installed || fail "Slurm's programs are still missing after apt-get install"
}

stop_daemon() { # stop_daemon PIDFILE: SIGTERM, then wait up to 10 s for it to go
  local pid
  running "$1" || return 0
  pid=$(cat "$1")
  kill "${pid}" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.2
  done
}

running() { # running PIDFILE: whether the process named in PIDFILE is alive
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_conf() {
  local host tmp
  host=$(hostname -s)
  tmp=$(mktemp)
  cat >"${tmp}" <<EOF
# Written by suanli's scripts/slurm.sh: a single-node cluster for tests.
ClusterName=local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG}/jobcomp.txt
MinJobAge=300
KillWait=5
MailProg=/bin/true
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=4000 State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "${tmp}" "${CONF}"; then
    install -D -m 0644 "${tmp}" "${CONF}"
    rm -f "${tmp}"
    return 0 # changed
  fi
  rm -f "${tmp}"
  return 1
}

case "${1:-start}" in
  start)
    [ "$(id -u)" = "0" ] || fail "needs root (it installs packages and starts slurmctld, slurmd and munged)"
    install_packages
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    [ -f /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (reinstall munge)"
    if ! running /run/munge/munged.pid; then
      runuser -u munge -- /usr/sbin/munged >&2 || fail "munged would not start (see /var/log/munge/)"
    fi
    wait_for 10 "munged" munge -n
    install -d -o slurm -g slurm /var/spool/slurmctld "${LOG}" /run/slurm
    touch "${LOG}/jobcomp.txt"
    chown slurm:slurm "${LOG}/jobcomp.txt"
    install -d /var/spool/slurmd
    changed=0
    write_conf && changed=1
    if [ "${changed}" = 1 ] && running /run/slurm/slurmctld.pid; then
      stop_daemon /run/slurm/slurmd.pid # a new configuration: restart both daemons with it
      stop_daemon /run/slurm/slurmctld.pid
    fi
    if ! running /run/slurm/slurmctld.pid; then
      setsid slurmctld -D </dev/null >"${LOG}/slurmctld.stderr" 2>&1 &
    fi
    wait_for 30 "slurmctld" sh -c 'scontrol ping | grep -q UP'
    if ! running /run/slurm/slurmd.pid; then
      setsid slurmd -D </dev/null >"${LOG}/slurmd.stderr" 2>&1 &
    fi
    # A node left DOWN/DRAIN by an earlier run comes back when told to.
    if sinfo -h -N -o %t 2>/dev/null | grep -qE 'down|drain'; then
      scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    fi
    wait_for 60 "the node to be idle in sinfo" \
      sh -c "sinfo -h -p '${PARTITION}' -o %t | grep -qE '^(idle|mix|alloc)'"
    echo "${PARTITION}"
    ;;
  stop)
    stop_daemon /run/slurm/slurmd.pid
    stop_daemon /run/slurm/slurmctld.pid
    stop_daemon /run/munge/munged.pid
    ;;
  status) # exit 0 when slurmctld and slurmd are both running
    running /run/slurm/slurmctld.pid && running /run/slurm/slurmd.pid
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
