# Sourced by slurm-up.sh and slurm-down.sh: the compute nodes of the test cluster and their network.
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*"; }

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

# Each node is a network namespace named after it, joined to the bridge by a veth pair whose host
# end is "v-NODE" (cut a node's link with: ip link set v-aif-n1 down).
NET=${AIF_CLUSTER_NET:-10.207.0}
BRIDGE=aifbr0
LOGIN_ADDR=$NET.254
NODES=(aif-n1 aif-n2 aif-n3)
NODE_RANGE="aif-n[1-3]"
ADDR_RANGE="$NET.[1-3]"
declare -A ADDRS=([aif-n1]=$NET.1 [aif-n2]=$NET.2 [aif-n3]=$NET.3)

network_up() { # the bridge, and each node's namespace, link, address, route and /etc/hosts
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then ip link add "$BRIDGE" type bridge; fi
  ip addr replace "$LOGIN_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local node
  for node in "${NODES[@]}"; do
    if ! ip netns list | grep -qw "$node"; then ip netns add "$node"; fi
    if ! ip link show "v-$node" >/dev/null 2>&1; then
      ip -n "$node" link del eth0 2>/dev/null || true
      ip link add "v-$node" type veth peer name eth0 netns "$node"
    fi
    ip link set "v-$node" master "$BRIDGE" up
    ip -n "$node" addr replace "${ADDRS[$node]}/24" dev eth0
    ip -n "$node" link set lo up
    ip -n "$node" link set eth0 up
    ip -n "$node" route replace default via "$LOGIN_ADDR"
    # the node's own view of names, bind-mounted over /etc/hosts for its slurmd (as ip netns exec does)
    mkdir -p "/etc/netns/$node"
    {
      echo "127.0.0.1 localhost"
      echo "$LOGIN_ADDR $(hostname -s)"
      local other
      for other in "${NODES[@]}"; do echo "${ADDRS[$other]} $other"; done
    } > "/etc/netns/$node/hosts"
  done
}

network_down() { # every process left in a node's namespace, then the namespaces and the bridge
  local node pids
  for node in "${NODES[@]}"; do
    if ip netns list | grep -qw "$node"; then
      pids=$(ip netns pids "$node" || true)
      if [[ -n $pids ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
      fi
      ip netns del "$node"
    fi
    ip link del "v-$node" 2>/dev/null || true
    rm -rf "/etc/netns/$node"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

stop_daemons() { # stop_daemons PIDFILE...: SIGTERM each daemon that runs, wait until all are gone
  local file pid
  for file in "$@"; do
    if alive "$file"; then kill "$(cat "$file")" 2>/dev/null || true; fi
  done
  for file in "$@"; do
    [[ -s $file ]] || continue
    pid=$(cat "$file")
    wait_for 30 "$(basename "$file" .pid) to stop" bash -c \
      "[[ ! -r /proc/$pid/status ]] || grep -q '^State:.*Z' /proc/$pid/status"
  done
}
