#!/usr/bin/env bash
# Start (or reuse) a test Slurm cluster of several nodes on this one machine for the Slurm
# backend's tests, as root and without systemd (Debian's slurm-wlm 22.05), and print its
# partition name. Installs Debian's packages (Slurm, munge, MPICH) when they are missing.
# Nothing but the partition name goes to stdout.
#   scripts/slurm.sh start   -> prints debug
#   scripts/slurm.sh stop
#   scripts/slurm.sh status   (exit 0 when slurmctld and every slurmd are running)
# The cluster has SUANLI_SLURM_NODES (2) nodes named <hostname>-1, <hostname>-2, ..., each its own
# slurmd on this host (`slurmd -N NAME`, a port of its own: Debian builds Slurm with multiple
# slurmd support). Each declares CPUs=16 whatever `nproc` says (SlurmdParameters=config_overrides),
# so many one-CPU test jobs run at once on a small machine, and SUANLI_SLURM_GPUS (4) GPUs of type
# SUANLI_SLURM_GPU_MODEL (a100) as GRES with no real device behind them (gres.conf File= naming
# placeholder device nodes, AutoDetect=off): Slurm allocates and accounts them and sets
# CUDA_VISIBLE_DEVICES, nothing opens a device. MPI
# programs (MPICH, `mpicc`) get their ranks from `srun --mpi=pmi2`. Finished jobs' state and usage
# are written to /var/log/slurm/jobcomp.txt (jobcomp/filetxt), since there is no slurmdbd.
set -euo pipefail
PARTITION=${SUANLI_SLURM_PARTITION:-debug}
NODE_CPUS=${SUANLI_SLURM_CPUS:-16}
NODES=${SUANLI_SLURM_NODES:-2}
GPUS=${SUANLI_SLURM_GPUS:-4}
GPU_MODEL=${SUANLI_SLURM_GPU_MODEL:-a100}
FAKE_GPUS=/run/slurm/fake-gpus
FIRST_PORT=6901 # node i's slurmd listens on FIRST_PORT + i - 1
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
LOG=/var/log/slurm
PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge mpich libmpich-dev)

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
    command -v sbatch >/dev/null && command -v munged >/dev/null && command -v mpicc >/dev/null
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

node_names() { # the nodes' names, one a line: <hostname>-1 ... <hostname>-N
  local host i
  host=$(hostname -s)
  for i in $(seq "${NODES}"); do echo "${host}-${i}"; done
}

slurmd_pidfile() { echo "/run/slurm/slurmd-$1.pid"; } # as SlurmdPidFile's %n

install_if_changed() { # install_if_changed TMP DEST: replace DEST by TMP; 0 when it changed
  if cmp -s "$1" "$2"; then
    rm -f "$1"
    return 1
  fi
  install -D -m 0644 "$1" "$2"
  rm -f "$1"
}

write_conf() { # writes slurm.conf and gres.conf; 0 when either changed
  local host tmp name port changed=1
  host=$(hostname -s)
  tmp=$(mktemp)
  cat >"${tmp}" <<EOF
# Written by suanli's scripts/slurm.sh: a test cluster of ${NODES} nodes on one machine.
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
GresTypes=gpu,npu
MpiDefault=none
EnforcePartLimits=ALL
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd-%n.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG}/jobcomp.txt
MinJobAge=300
KillWait=5
MailProg=/bin/true
EOF
  port=${FIRST_PORT}
  for name in $(node_names); do
    echo "NodeName=${name} NodeHostname=${host} NodeAddr=127.0.0.1 Port=${port}" \
      "CPUs=${NODE_CPUS} RealMemory=4000 Gres=gpu:${GPU_MODEL}:${GPUS} State=UNKNOWN" >>"${tmp}"
    port=$((port + 1))
  done
  echo "PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"${tmp}"
  install_if_changed "${tmp}" "${CONF}" && changed=0
  tmp=$(mktemp)
  { # GPUs that Slurm counts and allocates, with no real device behind them (see fake_gpus)
    echo "# Written by suanli's scripts/slurm.sh: GPUs without devices, for tests."
    echo "AutoDetect=off"
    for name in $(node_names); do
      echo "NodeName=${name} Name=gpu Type=${GPU_MODEL} File=${FAKE_GPUS}/${name}/gpu[0-$((GPUS - 1))]"
    done
  } >"${tmp}"
  install_if_changed "${tmp}" "${GRES_CONF}" && changed=0
  return "${changed}"
}

fake_gpus() { # the device files gres.conf names: character devices of a major no driver has
  # Slurm 22.05 drops a GPU GRES without File= ("Removing file-less GPU") and refuses a File= that
  # is not a character or block device; 240 is for local/experimental use (LANANA), so no
  # driver answers, and with TaskPlugin=task/none nothing opens them.
  local name i
  for name in $(node_names); do
    install -d "${FAKE_GPUS}/${name}"
    for i in $(seq 0 $((GPUS - 1))); do
      [ -c "${FAKE_GPUS}/${name}/gpu${i}" ] || mknod "${FAKE_GPUS}/${name}/gpu${i}" c 240 "${i}"
    done
  done
}

stop_slurmds() { # every slurmd this script started: today's nodes' and an older layout's
  local pidfile
  for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmd-*.pid; do
    if [ -e "${pidfile}" ]; then stop_daemon "${pidfile}"; fi
  done
  return 0
}

all_running() { # slurmctld and one slurmd per node
  local name
  running /run/slurm/slurmctld.pid || return 1
  for name in $(node_names); do
    running "$(slurmd_pidfile "${name}")" || return 1
  done
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
    changed=0
    write_conf && changed=1
    if [ "${changed}" = 1 ]; then
      stop_slurmds # a new configuration: restart every daemon with it
      stop_daemon /run/slurm/slurmctld.pid
    fi
    if ! running /run/slurm/slurmctld.pid; then
      setsid slurmctld -D </dev/null >"${LOG}/slurmctld.stderr" 2>&1 &
    fi
    wait_for 30 "slurmctld" sh -c 'scontrol ping | grep -q UP'
    fake_gpus
    for name in $(node_names); do
      install -d "/var/spool/slurmd/${name}"
      if ! running "$(slurmd_pidfile "${name}")"; then
        setsid slurmd -D -N "${name}" </dev/null >"${LOG}/slurmd-${name}.stderr" 2>&1 &
      fi
    done
    # A node left DOWN/DRAIN by an earlier run comes back when told to.
    for name in $(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /down|drain|drng|fail/ {print $1}'); do
      scontrol update NodeName="${name}" State=RESUME >/dev/null 2>&1 || true
    done
    wait_for 60 "all ${NODES} nodes to be up in sinfo (see ${LOG}/slurmd-*.log)" \
      sh -c "[ \$(sinfo -h -N -p '${PARTITION}' -o %t | grep -cE '^(idle|mix|alloc)') -ge ${NODES} ]"
    echo "${PARTITION}"
    ;;
  stop)
    stop_slurmds
    stop_daemon /run/slurm/slurmctld.pid
    stop_daemon /run/munge/munged.pid
    ;;
  status) # exit 0 when slurmctld and every node's slurmd are running
    all_running
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
