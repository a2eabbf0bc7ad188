#!/usr/bin/env bash
# Install and start a single-node Slurm cluster with accounting (munge, MariaDB, slurmdbd,
# slurmctld, slurmd) on this machine, idempotently, and wait until a job really runs.
# Everything runs as root, binds locally, and keeps its state under $AIF_SLURM_DIR.
set -euo pipefail

AIF_SLURM_DIR=${AIF_SLURM_DIR:-/var/lib/aif-slurm}
CLUSTER=${AIF_SLURM_CLUSTER:-aifci}
log() { printf '[slurm-up] %s\n' "$*"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}

alive() { # alive PIDFILE: the daemon in PIDFILE runs and is not a zombie
  [[ -s $1 ]] || return 1
  local pid; pid=$(cat "$1")
  [[ -r /proc/$pid/status ]] && ! grep -q '^State:.*Z' "/proc/$pid/status"
}

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  log "installing packages"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    munge slurm-wlm slurmdbd mariadb-server >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$AIF_SLURM_DIR"/{state,spool,log,run}

# munge
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey -c -k /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged bash -c 'munge -n | unmunge'
fi

# MariaDB
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  log "starting MariaDB"
  start-stop-daemon --start --background --oknodo --pidfile /run/mysqld/mysqld.pid \
    --exec /usr/sbin/mariadbd -- --user=mysql --pid-file=/run/mysqld/mysqld.pid
  wait_for 30 MariaDB mariadb-admin ping
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -1)
TOTAL_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
NODE_LINE=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((TOTAL_MB * 9 / 10))/; s/CPUs=[0-9]+/CPUs=8/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g" <<<"$NODE_LINE")
CONF_DIR=/etc/slurm
mkdir -p "$CONF_DIR"
cat > "$CONF_DIR/slurm.conf.new" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=$AIF_SLURM_DIR/state
SlurmdSpoolDir=$AIF_SLURM_DIR/spool
SlurmctldPidFile=$AIF_SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$AIF_SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$AIF_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$AIF_SLURM_DIR/log/slurmd.log
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat > "$CONF_DIR/slurmdbd.conf.new" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$AIF_SLURM_DIR/run/slurmdbd.pid
LogFile=$AIF_SLURM_DIR/log/slurmdbd.log
CONF
changed=0
for f in slurm.conf slurmdbd.conf; do
  if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"; changed=1; else rm "$CONF_DIR/$f.new"; fi
done
chmod 600 "$CONF_DIR/slurmdbd.conf"
if ((changed)); then
  log "configuration changed: restarting daemons"
  for d in slurmd slurmctld slurmdbd; do
    if alive "$AIF_SLURM_DIR/run/$d.pid"; then kill "$(cat "$AIF_SLURM_DIR/run/$d.pid")" || true; fi
  done
  for d in slurmd slurmctld slurmdbd; do
    wait_for 30 "$d to stop" bash -c "! grep -qs . /proc/\$(cat $AIF_SLURM_DIR/run/$d.pid 2>/dev/null || echo 0)/status || grep -q '^State:.*Z' /proc/\$(cat $AIF_SLURM_DIR/run/$d.pid)/status"
  done
fi

if ! alive "$AIF_SLURM_DIR/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd
fi
wait_for 30 slurmdbd sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! alive "$AIF_SLURM_DIR/run/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld
fi
wait_for 30 slurmctld scontrol ping
if ! alive "$AIF_SLURM_DIR/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd
fi
wait_for 60 "an idle node" bash -c 'sinfo -h -o %T | grep -Eq "^(idle|mixed|allocated)"'
scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
# sinfo can report idle before slurmd has registered: only a job that runs proves the cluster works.
wait_for 60 "a smoke job" srun -t 1 true
wait_for 30 "sacct" sacct -n -X
log "Slurm is up: $(sinfo -h -o '%P %D %T %c')"
