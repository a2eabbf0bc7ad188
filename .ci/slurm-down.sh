#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (slurmd on every node, slurmctld, slurmdbd; MariaDB and munged
# stay) and remove the compute nodes' network namespaces and the bridge. Idempotent.
set -euo pipefail
AIF_SLURM_DIR=${AIF_SLURM_DIR:-/var/lib/aif-slurm}
# shellcheck source=.ci/slurm-common.sh
source "$(dirname "$0")/slurm-common.sh"
shopt -s nullglob
stop_daemons "$AIF_SLURM_DIR"/run/slurmd*.pid "$AIF_SLURM_DIR/run/slurmctld.pid" "$AIF_SLURM_DIR/run/slurmdbd.pid"
network_down
log "Slurm stopped; namespaces left: $(ip netns list | grep -c aif- || true)"
