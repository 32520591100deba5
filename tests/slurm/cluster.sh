#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for testing the workflow's SLURM profile.
# Debian 12 packages (Slurm 22.05, munge, slurmdbd with a private MariaDB), run as root, no systemd,
# no cgroups. Used by tests/test_slurm.py and .ci/run.
#
#   tests/slurm/cluster.sh install   apt-get the packages
#   tests/slurm/cluster.sh up        write the configs, start munged, mariadbd, slurmdbd, slurmctld and
#                                    slurmd; wait until the node is idle; print KEY=VALUE lines
#                                    (partition, account, log folder, each daemon's pid)
#   tests/slurm/cluster.sh status    sinfo, squeue and the daemons' pids
#   tests/slurm/cluster.sh down      cancel the cluster's jobs, stop the daemons this script started,
#                                    each by the pid in its pidfile (TERM, then KILL after 30 s), and
#                                    remove our /etc/slurm links
#
# Environment: CLUSTERALIGN_SLURM_BASE=/tmp/clusteralign-slurm (configs, state, logs, pidfiles,
# database; `up` wipes it), DB_PORT=6833 (the private MariaDB's TCP port on 127.0.0.1), NODE_GPUS=2.
# Partitions: `debug` (the default) and `gpu`, both on the one node.
#
# Accounting (slurmdbd) is there because the executor plugin asks `sacct` for job states; without it
# the plugin loses track of its jobs and waits forever. The node is declared bigger than this machine
# (SlurmdParameters=config_overrides: 16 CPUs, 64 GiB) so that profiles/slurm's requests are accepted
# unchanged; nothing is enforced (no cgroups). The GPUs are character devices aliasing /dev/null:
# SLURM schedules them like real ones (at most NODE_GPUS GPU jobs at a time, CUDA_VISIBLE_DEVICES set).
set -euo pipefail

BASE=${CLUSTERALIGN_SLURM_BASE:-/tmp/clusteralign-slurm}
DB_PORT=${DB_PORT:-6833}
NODE_GPUS=${NODE_GPUS:-2}
NODE_CPUS=16 NODE_MEM_MB=65536
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log STATE=$BASE/state DB=$BASE/mysql DBRUN=$BASE/mysql-run
CLUSTER=clusteralign PARTITION=debug GPU_PARTITION=gpu ACCOUNT=testacct DBPASS=clusteralign-test
# The executor plugin's job-step code drops SLURM_CONF before calling srun inside a job, so srun only
# finds the configuration at the compiled-in default path: our files are linked there.
SYS_SLURM=/etc/slurm
PACKAGES="munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client"

say() { echo "[cluster.sh] $*" >&2; }
die() { say "$*"; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2> /dev/null; }
pid_in() { cat "$1" 2> /dev/null || true; }

wait_for() {  # wait_for SECONDS COMMAND...: retry COMMAND every 0.25 s until it succeeds
  local tries=$(( $1 * 4 )); shift
  for _ in $(seq 1 "$tries"); do "$@" > /dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}

stop_pidfiles() {  # stop_pidfiles NAME=PIDFILE...: TERM them all, wait up to 30 s, then KILL
  local entry name pidfile pid pids=()
  for entry in "$@"; do
    name=${entry%%=*} pidfile=${entry#*=}
    pid=$(pid_in "$pidfile")
    if alive "$pid"; then say "stopping $name (pid $pid)"; kill -TERM "$pid"; pids+=("$pid"); fi
    rm -f "$pidfile"
  done
  for _ in $(seq 1 120); do
    local left=()
    for pid in "${pids[@]}"; do if alive "$pid"; then left+=("$pid"); fi; done
    pids=("${left[@]}")
    [ "${#pids[@]}" = 0 ] && return 0
    sleep 0.25
  done
  say "still running after SIGTERM, sending SIGKILL: ${pids[*]}"
  kill -KILL "${pids[@]}" || true
}

cmd_install() {
  apt-get update -q
  # The image's policy-rc.d keeps the packages from starting their services; `up` starts them.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES
}

write_configs() {
  local host f i
  host=$(hostname -s)
  for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -L "$SYS_SLURM/$f" ] && [[ "$(readlink "$SYS_SLURM/$f")" != "$ETC/"* ]]; then
      die "$SYS_SLURM/$f links to $(readlink "$SYS_SLURM/$f"), another test cluster's; refusing to replace it"
    elif [ -e "$SYS_SLURM/$f" ] && [ ! -L "$SYS_SLURM/$f" ]; then
      die "$SYS_SLURM/$f is a real file (a configured cluster?); refusing to replace it"
    fi
  done
  cat > "$ETC/slurm.conf" <<END_OF_SLURM_CONF
# Written by tests/slurm/cluster.sh: one node on localhost, no cgroups.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
# sacct shows the plugin's --comment (rule and wildcards) only with this flag.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# Finished jobs stay visible to squeue for 5 min (the plugin's squeue status mode relies on it).
MinJobAge=300
# A cancelled job's processes get SIGTERM, then SIGKILL this many seconds later.
KillWait=5
# Trust the node description below instead of what slurmd detects on this machine.
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=ALL MaxTime=INFINITE State=UP
END_OF_SLURM_CONF
  # slurmd accepts only character or block devices as GPU files; these alias /dev/null.
  mkdir -p "$BASE/dev"
  for i in $(seq 0 $(( NODE_GPUS - 1 ))); do mknod "$BASE/dev/nvidia$i" c 1 3; done
  echo "NodeName=$host Name=gpu Count=$NODE_GPUS File=$BASE/dev/nvidia[0-$(( NODE_GPUS - 1 ))]" > "$ETC/gres.conf"
  cat > "$ETC/slurmdbd.conf" <<END_OF_SLURMDBD_CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
END_OF_SLURMDBD_CONF
  chown slurm:slurm "$ETC/slurmdbd.conf"
  chmod 600 "$ETC/slurmdbd.conf"
  mkdir -p "$SYS_SLURM"
  for f in slurm.conf gres.conf slurmdbd.conf; do ln -sfn "$ETC/$f" "$SYS_SLURM/$f"; done
}

start_munge() {
  if alive "$(pid_in /run/munge/munged.pid)"; then
    say "munged is already running (pid $(pid_in /run/munge/munged.pid)); using it, and leaving it running"
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -k /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$RUN/munged.ours"
  wait_for 10 sh -c 'munge -n | unmunge' || die "munged does not answer"
}

start_accounting() {
  mkdir -p "$DB" "$DBRUN"
  chown mysql:mysql "$DB" "$DBRUN"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB" --auth-root-authentication-method=socket \
    > "$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOG/mariadb-install.log"
  # A private server: own data folder and socket, TCP on 127.0.0.1 only, /etc/mysql ignored.
  setsid mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$DBRUN/mysqld.sock" \
    --pid-file="$DBRUN/mariadb.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --log-error="$DBRUN/mariadb.log" < /dev/null > /dev/null 2>&1 &
  wait_for 60 mariadb-admin --no-defaults --socket="$DBRUN/mysqld.sock" -u root ping \
    || die "mariadbd did not come up; see $DBRUN/mariadb.log"
  mariadb --no-defaults --socket="$DBRUN/mysqld.sock" -u root -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    FLUSH PRIVILEGES;"
  /usr/sbin/slurmdbd
  wait_for 60 sacctmgr -n show cluster || die "slurmdbd does not answer; see $LOG/slurmdbd.log"
  # sacctmgr reads AccountingStorageType from slurm.conf, so this comes after write_configs.
  sacctmgr -i add cluster "$CLUSTER" > /dev/null
  sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=tests Organization=clusteralign > /dev/null
  sacctmgr -i add user "$(id -un)" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" > /dev/null
}

node_idle() { [ "$(sinfo -h -o %t 2> /dev/null | sort -u)" = idle ]; }

cmd_up() {
  [ "$(id -u)" = 0 ] || die "must run as root (it starts munged and the SLURM daemons)"
  local missing="" b name
  for b in munged slurmctld slurmd slurmdbd mariadbd sbatch sacct sacctmgr; do
    command -v "$b" > /dev/null || missing="$missing $b"
  done
  [ -z "$missing" ] || die "not installed:$missing (run: $0 install)"
  cmd_down 2> /dev/null   # leftovers of an interrupted run of ours
  rm -rf "$BASE"
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d"
  chown slurm:slurm "$RUN" "$LOG" "$STATE/ctld"
  chmod 755 "$BASE" "$ETC" "$RUN" "$LOG" "$STATE"
  write_configs
  start_munge
  start_accounting
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
  wait_for 60 node_idle || { tail -n 20 "$LOG"/slurm*.log >&2; die "the node did not become idle"; }
  echo "PARTITION=$PARTITION"
  echo "GPU_PARTITION=$GPU_PARTITION"
  echo "ACCOUNT=$ACCOUNT"
  echo "LOGDIR=$LOG"
  if [ -f "$RUN/munged.ours" ]; then echo "PID_munged=$(pid_in /run/munge/munged.pid)"; fi
  echo "PID_mariadbd=$(pid_in "$DBRUN/mariadb.pid")"
  for name in slurmdbd slurmctld slurmd; do echo "PID_$name=$(pid_in "$RUN/$name.pid")"; done
}

cmd_status() {
  sinfo -o '%P %a %D %t %c %m %G' || true
  squeue --states=all -o '%i %j %T %k' || true
  local f
  for f in "$RUN"/*.pid "$DBRUN"/mariadb.pid /run/munge/munged.pid; do
    if [ -f "$f" ]; then echo "$f: $(cat "$f")"; fi
  done
}

no_jobs_listed() { [ -z "$(squeue -h -o %i 2> /dev/null)" ]; }

cmd_down() {
  # Jobs first: slurmstepd and the job's processes outlive a stopped slurmd. All jobs on this
  # private cluster are the tests' own.
  local jobs f
  if alive "$(pid_in "$RUN/slurmctld.pid")"; then
    jobs=$(squeue -h -o %i 2> /dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs" $jobs
      scancel $jobs || true
      wait_for 30 no_jobs_listed || say "jobs still listed after 30 s:" $(squeue -h -o %i)
    fi
  fi
  # slurmdbd stays up until slurmctld has gone, so the last job records reach the database.
  stop_pidfiles slurmd="$RUN/slurmd.pid" slurmctld="$RUN/slurmctld.pid"
  stop_pidfiles slurmdbd="$RUN/slurmdbd.pid"
  if [ -f "$RUN/munged.ours" ]; then
    stop_pidfiles mariadbd="$DBRUN/mariadb.pid" munged=/run/munge/munged.pid
    rm -f "$RUN/munged.ours"
  else
    stop_pidfiles mariadbd="$DBRUN/mariadb.pid"
  fi
  for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -L "$SYS_SLURM/$f" ] && [[ "$(readlink "$SYS_SLURM/$f")" == "$ETC/"* ]]; then rm -f "$SYS_SLURM/$f"; fi
  done
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  status) cmd_status ;;
  down) cmd_down ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;p;}' "$0" >&2; exit 2 ;;
esac
