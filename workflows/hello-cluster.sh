#!/usr/bin/env bash
# The example job: pull an image once into the cache, then run six tasks on three nodes, each
# in its own container. With the local testbed, run 'eval "$(hpc-exec testbed env)"' first
# (SLURM_CONF, HPC_EXEC_CONFIG and the test image references); on a real cluster, pass an image:
#
#   workflows/hello-cluster.sh [IMAGE]
set -euo pipefail
: "${SLURM_CONF:?run 'eval \"\$(hpc-exec testbed env)\"' first, or point SLURM_CONF at a cluster}"
image=${1:-${HPC_EXEC_TESTBED_IMAGE_PYTHON:?name an image: workflows/hello-cluster.sh IMAGE}}

echo "hello-cluster: hpc-exec pull $image" >&2
hpc-exec pull "$image" >&2
echo "hello-cluster: srun -N3 -n6 hpc-exec run $image ..." >&2
# Each task prints its node and what its container runs; one line per distinct answer.
srun -N3 -n6 hpc-exec run "$image" sh -c \
    'echo "$(hostname): $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version)"' \
    | sort | uniq -c
