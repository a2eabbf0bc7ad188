#!/usr/bin/env bash
# Install and start a Slurm cluster with accounting on this machine, idempotently, and wait until
# a job really runs on every node. One slurmctld and slurmdbd (munge, MariaDB) serve two partitions:
# - debug (default, profile ci-slurm): the node of this machine itself, every address 127.0.0.1;
# - cluster (profile ci-cluster): three compute nodes aif-n1..3, each a slurmd in its own network
#   namespace (and hostname) with its own address on a bridge, 10.207.0.1-3; this machine is the
#   login node at 10.207.0.254. The file system is shared (munge's socket, job folders, the venv).
# The addresses are private to this machine's namespaces. Everything runs as root and keeps its
# state under $AIF_SLURM_DIR; .ci/slurm-down.sh stops it all and removes the namespaces.
set -euo pipefail

AIF_SLURM_DIR=${AIF_SLURM_DIR:-/var/lib/aif-slurm}
CLUSTER=${AIF_SLURM_CLUSTER:-aifci}
# shellcheck source=.ci/slurm-common.sh
source "$(dirname "$0")/slurm-common.sh"

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
  || ! command -v ip >/dev/null; then
  log "installing packages"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    munge slurm-wlm slurmdbd mariadb-server iproute2 >/dev/null
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

log "network: bridge $BRIDGE $LOGIN_ADDR, nodes ${NODES[*]}"
network_up

HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -1)
TOTAL_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
NODE_LINE=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((TOTAL_MB * 9 / 10))/; s/CPUs=[0-9]+/CPUs=8/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g" <<<"$NODE_LINE")
CONF_DIR=/etc/slurm
mkdir -p "$CONF_DIR"
cat > "$CONF_DIR/slurm.conf.new" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST($LOGIN_ADDR)
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
SlurmdTimeout=20
JobRequeue=0
KillWait=5
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=$AIF_SLURM_DIR/state
SlurmdSpoolDir=$AIF_SLURM_DIR/spool/%n
SlurmctldPidFile=$AIF_SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$AIF_SLURM_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$AIF_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$AIF_SLURM_DIR/log/slurmd-%n.log
$NODE_LINE State=UNKNOWN
NodeName=$NODE_RANGE NodeAddr=$ADDR_RANGE CPUs=2 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=cluster Nodes=$NODE_RANGE MaxTime=60 State=UP
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
  stop_daemons "$AIF_SLURM_DIR"/run/slurmd*.pid "$AIF_SLURM_DIR/run/slurmctld.pid" "$AIF_SLURM_DIR/run/slurmdbd.pid"
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
mkdir -p "$AIF_SLURM_DIR/spool/$HOST"
if ! alive "$AIF_SLURM_DIR/run/slurmd-$HOST.pid"; then
  log "starting slurmd ($HOST)"
  slurmd
fi
for node in "${NODES[@]}"; do
  mkdir -p "$AIF_SLURM_DIR/spool/$node"
  if ! alive "$AIF_SLURM_DIR/run/slurmd-$node.pid"; then
    log "starting slurmd ($node, ${ADDRS[$node]}, namespace $node)"
    # Only the network namespace is the node's (ip netns exec would remount /sys without cgroups);
    # its own hostname and /etc/hosts come from private UTS and mount namespaces.
    nsenter --net="/run/netns/$node" unshare --uts --mount \
      sh -c "mount --bind /etc/netns/$node/hosts /etc/hosts && hostname $node && exec slurmd -N $node"
  fi
done
up_nodes() { # every node of the cluster responds
  [[ $(sinfo -h -N -r -o %N | sort -u | wc -l) -eq $((${#NODES[@]} + 1)) ]]
}
wait_for 60 "every node to respond" up_nodes
scontrol update nodename="$HOST,$NODE_RANGE" state=resume >/dev/null 2>&1 || true
# sinfo can report idle before slurmd has registered: only a job that runs proves the cluster works.
wait_for 60 "a smoke job" srun -t 1 true
wait_for 60 "a smoke job on every compute node" srun -t 1 -p cluster -N "${#NODES[@]}" true
wait_for 30 "sacct" sacct -n -X
log "Slurm is up: $(sinfo -h -o '%P %D %T %c' | tr '\n' ';')"
