#!/usr/bin/env bash
# Install everything hpc-exec and its testbed need on Debian 12 (bookworm), then install
# hpc-exec itself into a virtualenv. Run as root; idempotent; no questions asked.
#
#   HPC_EXEC_VENV   where the virtualenv goes (default /opt/hpc-exec/venv). It is made from
#                   Debian's /usr/bin/python3 so that every user of the cluster, not only root,
#                   can run hpc-exec from it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${HPC_EXEC_VENV:-/opt/hpc-exec/venv}

packages=(
    # the cluster: Slurm and its authentication
    slurm-wlm slurm-client munge
    # the registry and the tools of the Sarus-style baseline in bench/pull.py
    docker-registry skopeo umoci
    # images and containers
    runc tini squashfs-tools squashfs-tools-ng squashfuse fuse3 fuse-overlayfs uidmap
    # building test images, TLS and htpasswd for the private registry
    debootstrap busybox-static openssl apache2-utils
    # namespaces, mounts
    util-linux mount iproute2
    # the Python that runs hpc-exec
    python3 python3-venv python3-dev
    # hooks: MPI and SSH
    mpich libmpich-dev dropbear-bin
    # the package build compiles the static rootless idmap helper (engine/runtime/idmap.c)
    gcc libc6-dev
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (apt-get, and the testbed needs root)" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps.sh: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
fi

# Rootless containers mount squashfs images with FUSE as the calling user. Debian's udev rule
# gives /dev/fuse mode 0666; machines without udev (containers, CI sandboxes) leave it 0600.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    chmod 0666 /dev/fuse
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "install-deps.sh: creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
echo "install-deps.sh: installing hpc-exec into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$repo[dev]" </dev/null

# The rootless idmap helper (engine/runtime/idmap.c) is compiled, static, by the package build
# above (setup.py), into the package, where the engine looks for it (docs/run.md, "Rootless
# mode"); gcc and libc6-dev above are what that build needs. Earlier versions of this script
# built it into $venv/libexec, where nothing looks any more: remove that copy.
rm -f "$venv/libexec/hpc-exec-idmap"
rmdir "$venv/libexec" 2>/dev/null || true
