#!/usr/bin/env bash
# Run the example workflow with 'snakemake --executor hpc-container' in a scratch copy, then
# print what ran where: each rule's image (the /etc/os-release ID it saw), whether the host's
# Slurm client was visible (it is on a node, never in an image) and the node. With the local
# testbed, run 'eval "$(hpc-exec testbed env)"' first.
#
#   workflows/snakemake/run.sh [WORKDIR] [SNAKEMAKE ARGS...]
#
# WORKDIR (default: a new directory under /tmp) must not be under /var or /etc: the engine's
# default userMounts rules forbid binding it there.
set -euo pipefail
: "${SLURM_CONF:?run 'eval \"\$(hpc-exec testbed env)\"' first, or point SLURM_CONF at a cluster}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${1:-$(mktemp -d /tmp/hpc-exec-snakemake.XXXXXX)}
shift || true
mkdir -p "$work"
cp -r "$here/Snakefile" "$here/profile" "$work/"
cd "$work"
echo "snakemake example: snakemake --profile profile --executor hpc-container (in $work)" >&2
snakemake --profile profile --executor hpc-container "$@"
echo "snakemake example: what ran where"
sed -n 's/^\([a-z]*\): os=\(\S*\) host-slurm=\(\S*\) node=\(\S*\)$/\1 \2 \3 \4/p' \
    results/report.txt | sort | uniq -c | while read -r n rule os slurm node; do
    if [ "$slurm" = no ]; then where="in the $os image"; else where="natively"; fi
    printf '  %-9s x%s  on %s, %s\n' "$rule" "$n" "$node" "$where"
done
