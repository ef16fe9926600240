#!/usr/bin/env bash
# The example job: six tasks on three nodes of the cluster named by SLURM_CONF (for the local
# testbed: eval "$(hpc-exec testbed env)" first). Prints one line per node with its task count.
set -euo pipefail
: "${SLURM_CONF:?run 'eval \"\$(hpc-exec testbed env)\"' first, or point SLURM_CONF at a cluster}"
echo "hello-cluster: srun -N3 -n6 hostname" >&2
srun -N3 -n6 hostname | sort | uniq -c
