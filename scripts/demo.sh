#!/usr/bin/env bash
# The main job of the README on a fresh machine: install, start the local testbed (munge,
# slurmctld, three slurmd nodes, two registries, test images), then run the example job on
# three nodes, the example Snakemake workflow with 'snakemake --executor hpc-container', and the
# example Parsl script (workers and apps in containers). Leaves the testbed up; stop it with 'hpc-exec testbed down'. Run as root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${HPC_EXEC_VENV:-/opt/hpc-exec/venv}

"$repo/scripts/install-deps.sh"
export PATH="$venv/bin:$PATH"
hpc-exec testbed up
eval "$(hpc-exec testbed env)"
"$repo/workflows/hello-cluster.sh"
# the Snakemake example: three rules in two images and one native rule, each job a Slurm job
"$repo/workflows/snakemake/run.sh"
# the Parsl example: python_apps in HTEX workers that run in a container on two nodes, and
# container_apps in a second image
"$venv/bin/python3" "$repo/workflows/parsl/containers.py"
