#!/usr/bin/env bash
# slurm-local.sh - a REAL single-node SLURM cluster without systemd (Debian 12, slurm 22.05), for the sweep
# integration tests and for trying `pirl-ablate sweep --executor slurm` on one machine.
#
#   munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd      all as root, all state under $LAB
#
# Usage:
#   scripts/slurm-local.sh start            install missing packages (apt), start what is not running (idempotent)
#   scripts/slurm-local.sh stop [--purge]   scancel jobs, stop the daemons by pidfile; --purge wipes runtime state
#   scripts/slurm-local.sh status           exit 0 when the node is usable, 1 otherwise
#   scripts/slurm-local.sh env-file         print the path of env.sh (`source "$(scripts/slurm-local.sh env-file)"`)
#
# Env knobs:
#   SLURMLAB_DIR=/tmp/pirl-ablate-slurm  where config/state/logs/pidfiles live
#   SLURMLAB_ACCOUNTING=dbd|none    dbd (default): mariadb + slurmdbd so `sacct` works (submitit uses sacct for
#                                   job states; without it a job killed without a result makes result() hang)
#   SLURMLAB_INSTALL=1              apt-get install missing packages (0: fail instead)
#   SLURMLAB_NODENAME=$(hostname -s)
#   SLURMLAB_CRED_EXPIRE=10         seconds a requeued job waits before it may start again (slurm default 120)
#   SLURMLAB_FAKE_GPUS=0            N>0: declare N fake gres/gpu (char devices = /dev/null) so that
#                                   --gpus-per-node=K is schedulable and CUDA_VISIBLE_DEVICES gets set
#
# Clients (sbatch, sacct, submitit) need SLURM_CONF=$SLURMLAB_DIR/etc/slurm.conf in their environment.
# Never uses pkill/killall: every daemon is stopped through its pidfile after checking /proc/PID/cmdline.
set -euo pipefail

LAB=${SLURMLAB_DIR:-/tmp/pirl-ablate-slurm}
ACCT=${SLURMLAB_ACCOUNTING:-dbd}
INSTALL=${SLURMLAB_INSTALL:-1}
NODE=${SLURMLAB_NODENAME:-$(hostname -s)}
CRED_EXPIRE=${SLURMLAB_CRED_EXPIRE:-10}
FAKE_GPUS=${SLURMLAB_FAKE_GPUS:-0}
CLUSTER=slurmlab
DB_PORT=3307          # non-standard so we never collide with a system mariadb
DB_PASS=slurmlab      # throw-away local test database
CONF=$LAB/etc/slurm.conf
MSOCK=$LAB/munge/munge.socket.2
export SLURM_CONF=$CONF

T0=${EPOCHREALTIME/./}    # microseconds (bash >= 5)
log() { local ms=$(( (${EPOCHREALTIME/./} - T0) / 1000 )); printf '[slurm-local %3d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }
die() { log "ERROR: $*"; exit 1; }

pid_of() {  # pid_of <pidfile> <binary>: print the pid if it is alive AND runs <binary>
  local pidfile=$1 bin=$2 pid cmd
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == "$bin "* || $cmd == */"$bin "* ]] || return 1
  echo "$pid"
}
alive() { pid_of "$@" >/dev/null; }

wait_for() {  # wait_for <seconds> <description> <command...>
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < end )) || die "timeout (${t}s) waiting for $what"
    sleep 0.2
  done
}

# ================================================================================================= start
install_packages() {
  local need=()
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v slurmd    >/dev/null || need+=(slurmd)
  command -v sbatch    >/dev/null || need+=(slurm-client)
  command -v munged    >/dev/null || need+=(munge)
  if [[ $ACCT == dbd ]]; then
    command -v slurmdbd >/dev/null || need+=(slurmdbd)
    { command -v mariadbd && command -v mariadb-admin; } >/dev/null || need+=(mariadb-server)
  fi
  (( ${#need[@]} )) || return 0
  [[ $INSTALL == 1 ]] || die "missing packages: ${need[*]}"
  (( EUID == 0 )) || die "missing packages (${need[*]}) and not root: cannot apt-get install"
  command -v apt-get >/dev/null || die "missing packages (${need[*]}) and no apt-get"
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d / no systemd: postinst cannot start services, which is what we want
  apt-get install -y -qq --no-install-recommends "${need[@]}" >"$LAB.apt.log" 2>&1 \
    || { tail -20 "$LAB.apt.log"; die "apt-get failed"; }
}

write_config() {  # slurm.conf, rewritten only when its content changes
  local hw acct_lines gres_node="" gres_types="" new_conf i
  hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')     # CPUs=.. Boards=.. ... RealMemory=..
  [[ $hw == *RealMemory=* ]] || die "slurmd -C gave no hardware line"
  if [[ $ACCT == dbd ]]; then
    # for slurmdbd connections the munge socket comes from AccountingStoragePass, not AuthInfo
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$MSOCK"
  else
    acct_lines="AccountingStorageType=accounting_storage/none"
  fi
  if (( FAKE_GPUS > 0 )); then
    gres_node="Gres=gpu:$FAKE_GPUS"; gres_types="GresTypes=gpu"
    # gres/gpu drops File-less GPUs and wants char devices: fake them with /dev/null's major:minor
    mkdir -p "$LAB/fakegpu"
    for ((i = 0; i < FAKE_GPUS; i++)); do
      [[ -c $LAB/fakegpu/nvidia$i ]] || mknod "$LAB/fakegpu/nvidia$i" c 1 3
    done
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/fakegpu/nvidia[0-%s]\n' \
      "$NODE" "$LAB" "$((FAKE_GPUS - 1))" >"$LAB/etc/gres.conf.new"
  else
    : >"$LAB/etc/gres.conf.new"
  fi
  new_conf=$(cat <<EOF
# generated by scripts/slurm-local.sh - single node test cluster
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK,cred_expire=$CRED_EXPIRE
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$LAB/state/ctld
SlurmdSpoolDir=$LAB/state/d
SlurmctldPidFile=$LAB/run/slurmctld.pid
SlurmdPidFile=$LAB/run/slurmd.pid
SlurmctldLogFile=$LAB/log/slurmctld.log
SlurmdLogFile=$LAB/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain /proc based process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
$gres_types
$acct_lines
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $hw $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
  if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    if alive "$LAB/run/slurmctld.pid" slurmctld || alive "$LAB/run/slurmd.pid" slurmd; then
      log "WARNING: slurm.conf changed while daemons run; run '$0 stop' first to apply it"
    else
      printf '%s\n' "$new_conf" >"$CONF"
      mv "$LAB/etc/gres.conf.new" "$LAB/etc/gres.conf"
    fi
  fi
  [[ -f $LAB/etc/gres.conf ]] || mv "$LAB/etc/gres.conf.new" "$LAB/etc/gres.conf"
  rm -f "$LAB/etc/gres.conf.new"
  printf 'export SLURM_CONF=%s\n' "$CONF" >"$LAB/env.sh"
}

start_munge() {
  [[ -s $LAB/munge/munge.key ]] || mungekey -c -k "$LAB/munge/munge.key"
  chmod 600 "$LAB/munge/munge.key"
  if alive "$LAB/munge/munged.pid" munged; then
    log "munged already running (pid $(<"$LAB/munge/munged.pid"))"
    return
  fi
  rm -f "$MSOCK" "$MSOCK.lock"
  munged --key-file="$LAB/munge/munge.key" --socket="$MSOCK" \
         --pid-file="$LAB/munge/munged.pid" --log-file="$LAB/log/munged.log" \
         --seed-file="$LAB/munge/munged.seed"            # forks into background itself
  wait_for 10 "munge socket" bash -c "munge -S '$MSOCK' -n | unmunge -S '$MSOCK'"
  log "munged started (pid $(<"$LAB/munge/munged.pid"))"
}

start_accounting() {  # mariadb + slurmdbd, so that sacct works
  local DB=$LAB/mysql DBSOCK=$LAB/mysql/mysqld.sock clusters
  mkdir -p "$DB"
  if [[ ! -d $DB/data/mysql ]]; then
    log "initialising mariadb datadir"
    mariadb-install-db --no-defaults --user=root --datadir="$DB/data" --skip-test-db \
        --auth-root-authentication-method=socket >"$LAB/log/mariadb-install.log" 2>&1 \
      || { tail "$LAB/log/mariadb-install.log"; die "mariadb-install-db failed"; }
  fi
  if alive "$DB/mariadbd.pid" mariadbd; then
    log "mariadbd already running (pid $(<"$DB/mariadbd.pid"))"
  else
    # mariadbd does not daemonize: detach it (setsid) with its own log
    setsid mariadbd --no-defaults --user=root --datadir="$DB/data" --socket="$DBSOCK" \
        --port=$DB_PORT --bind-address=127.0.0.1 --pid-file="$DB/mariadbd.pid" \
        --log-error="$LAB/log/mariadbd.log" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
    wait_for 60 "mariadbd" mariadb-admin --no-defaults --socket="$DBSOCK" -uroot ping
    log "mariadbd started (pid $(<"$DB/mariadbd.pid"))"
  fi
  mariadb --no-defaults --socket="$DBSOCK" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
  # slurmdbd.conf is looked up next to $SLURM_CONF and must be 0600, owned by SlurmUser
  cat >"$LAB/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MSOCK
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$LAB/run/slurmdbd.pid
LogFile=$LAB/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$LAB/etc/slurmdbd.conf"
  if alive "$LAB/run/slurmdbd.pid" slurmdbd; then
    log "slurmdbd already running (pid $(<"$LAB/run/slurmdbd.pid"))"
  else
    slurmdbd                                              # daemonizes, reads $SLURM_CONF's folder
    wait_for 30 "slurmdbd" sacctmgr -n -P show cluster
    log "slurmdbd started (pid $(<"$LAB/run/slurmdbd.pid"))"
  fi
  clusters=$(sacctmgr -n -P show cluster format=cluster)
  if ! grep -qx "$CLUSTER" <<<"$clusters"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster $CLUSTER in slurmdbd"
  fi
}

start_slurm() {
  local st end
  if alive "$LAB/run/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(<"$LAB/run/slurmctld.pid"))"
  else
    slurmctld -f "$CONF"                                  # daemonizes
    wait_for 30 "slurmctld" bash -c "scontrol ping | grep -q UP"
    log "slurmctld started (pid $(<"$LAB/run/slurmctld.pid"))"
  fi
  if alive "$LAB/run/slurmd.pid" slurmd; then
    log "slurmd already running (pid $(<"$LAB/run/slurmd.pid"))"
  else
    slurmd -f "$CONF"                                     # daemonizes
    wait_for 30 "slurmd pidfile" test -s "$LAB/run/slurmd.pid"
    log "slurmd started (pid $(<"$LAB/run/slurmd.pid"))"
  fi
  # the node is UNKNOWN (or "idle*") until slurmd registers; a node left DOWN/DRAINED earlier is resumed;
  # INVAL means slurm.conf does not match the hardware/gres that slurmd reports
  end=$((SECONDS + 60))
  while :; do
    st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] && break
    [[ $st =~ down|drain ]] && { scontrol update nodename="$NODE" state=resume 2>/dev/null || true; }
    (( SECONDS < end )) || die "node $NODE not usable after 60s: $(sinfo -h -N -o '%N %T %E')"
    sleep 0.2
  done
}

cmd_start() {
  mkdir -p "$LAB"
  install_packages
  mkdir -p "$LAB"/{etc,run,log,state/ctld,state/d,munge}
  chmod 755 "$LAB" "$LAB/munge"       # munged: socket dir must be o+x, key must be 0600 and owned by us
  write_config
  start_munge
  [[ $ACCT == dbd ]] && start_accounting
  start_slurm
  log "cluster up"
  sinfo
  echo "export SLURM_CONF=$CONF    # or: source $LAB/env.sh"
}

# ================================================================================================== stop
stop_pid() {  # stop_pid <pid> <label> <grace seconds>
  local pid=$1 label=$2 grace=$3 i
  log "SIGTERM $label (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "$label stopped"; return 0; }
    sleep 0.1
  done
  log "SIGKILL $label (pid $pid) after ${grace}s"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

stop_one() {  # stop_one <pidfile> <binary> <grace>
  local pid
  if pid=$(pid_of "$1" "$2"); then stop_pid "$pid" "$2" "$3"; else log "$2 not running"; fi
  rm -f "$1"
}

cmd_stop() {
  local jobs i d
  # 1. jobs first: their slurmstepd are detached from slurmd, stopping slurmd alone leaves them running
  if [[ -f $CONF ]] && alive "$LAB/run/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [[ -z $(squeue -h -o %A 2>/dev/null || true) ]] && break
        sleep 0.2
      done
    fi
  fi
  # 2. daemons, reverse start order
  stop_one "$LAB/run/slurmd.pid"      slurmd    15
  stop_one "$LAB/run/slurmctld.pid"   slurmctld 15
  stop_one "$LAB/run/slurmdbd.pid"    slurmdbd  15
  stop_one "$LAB/mysql/mariadbd.pid"  mariadbd  30
  stop_one "$LAB/munge/munged.pid"    munged    10
  # 3. orphaned job steps of THIS cluster (identified by their SLURM_CONF), by PID
  for d in /proc/[0-9]*; do
    [[ $(cat "$d/comm" 2>/dev/null) == slurmstepd ]] || continue
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF"; then
      stop_pid "${d#/proc/}" "orphan slurmstepd" 5
    fi
  done
  if [[ ${1:-} == --purge ]]; then
    log "purging runtime state under $LAB"
    rm -rf "${LAB:?}"/{etc,run,log,state,munge,mysql,fakegpu,env.sh}
  fi
  log "stopped"
}

# ================================================================================================ status
cmd_status() {
  local st
  [[ -f $CONF ]] || { echo "not configured ($CONF missing)"; return 1; }
  alive "$LAB/run/slurmctld.pid" slurmctld || { echo "slurmctld not running"; return 1; }
  alive "$LAB/run/slurmd.pid" slurmd || { echo "slurmd not running"; return 1; }
  if [[ $ACCT == dbd ]]; then
    alive "$LAB/run/slurmdbd.pid" slurmdbd || { echo "slurmdbd not running (sacct would fail)"; return 1; }
  fi
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] || { echo "node $NODE is '${st:-unknown}'"; return 1; }
  echo "up: node $NODE $st, SLURM_CONF=$CONF"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status ;;
  env-file) echo "$LAB/env.sh" ;;
  *) echo "usage: $0 start|stop [--purge]|status|env-file" >&2; exit 2 ;;
esac
