"""MPI hook: swap the container's MPICH-ABI libraries for the host's, when ABI-compatible.

Contract (docs/hooks.md; a ``createContainer`` hook, or ``createRuntime``, where it enters the
container's mount namespace itself; no arguments):

* Applies when the annotation ``com.hooks.mpi.enabled`` is ``true`` and, if the hook env sets
  ``MPI_TYPE``, the annotation ``com.hooks.mpi.type`` is absent or equal to it (one hooks.d
  entry per host MPI stack, chosen with ``--mpi-type``); otherwise exits 0 (DEBUG line).
* Hook env: ``MPI_LIBS`` (colon-separated host libraries, required), optional
  ``MPI_DEPENDENCY_LIBS`` (bound under ``/usr/lib``), ``BIND_MOUNTS`` (bound at the same path;
  device files are whitelisted ``rw`` in a cgroup-v1 devices controller),
  ``MPI_COMPATIBILITY_TYPE`` (``major``, ``full`` (default) or ``strict``, see hooks/_libs.py),
  ``LDCONFIG_PATH`` (host ldconfig, run as ``ldconfig -r <rootfs>`` before looking at the
  container's libraries and again at the end; recommended).
* The container's libraries are found in its ``/etc/ld.so.cache``: for each host library
  ``libX.so.A.B.C`` every container entry ``libX.so*``. Each is replaced by a read-only bind of
  the host library when the ABI rules allow: majors equal; host minor ≥ container minor, a
  lower host minor only warns; missing numbers count as 0. Host libraries without counterpart
  are added under ``/usr/lib``.
* Exit 1, before mounting anything, when the container has none of the libraries or one is
  ABI-incompatible; the message names both versions.
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Only what the not-applicable path needs is imported here; the rest once the hook applies.
from hpc_exec.hooks._state import (
    Container,
    HookError,
    Log,
    exit_now,
    read_container,
    run_hook,
)

__all__ = ["main", "plan"]

HOOK = "mpi"


def plan(container: Container, host_libs: list[str], mode: str, log: Log
         ) -> tuple[list[tuple[str, str]], list[str]]:
    """(host library, container target) replacements and host libraries to add."""
    from hpc_exec.hooks import _ldcache
    from hpc_exec.hooks._libs import check_abi, linker_name, version_of
    from hpc_exec.hooks._mount import resolve_in_rootfs

    cache = _ldcache.read(container.rootfs)
    replace: list[tuple[str, str]] = []
    add: list[str] = []
    for host in host_libs:
        real = os.path.realpath(host)
        if not os.path.isfile(real):
            raise HookError(f"MPI_LIBS: {host} does not exist")
        host_version = version_of(real) or version_of(host)
        matches = _ldcache.find(cache, linker_name(real))
        if not matches:
            add.append(host)
            continue
        targets = {resolve_in_rootfs(container.rootfs, path) for _, path in matches}
        for target in sorted(targets):
            if not os.path.isfile(target):
                log.warning(f"the container's linker cache names {target}, which is missing; "
                            "skipped")
                continue
            container_version = version_of(target) or version_of(matches[0][0])
            warning = check_abi(host_version, container_version, mode)
            if warning:
                log.warning(f"{os.path.basename(real)}: {warning}")
            replace.append((real, target))
    if not replace:
        raise HookError(
            "the container has none of the host's MPI libraries "
            f"({', '.join(os.path.basename(h) for h in host_libs)}) in its linker cache "
            "/etc/ld.so.cache: is the image built against an MPICH-ABI MPI?")
    return replace, add


def _run(log: Log) -> int:
    container = read_container()
    annotations = container.annotations
    if annotations.get("com.hooks.mpi.enabled", "").lower() != "true":
        log.debug("annotation com.hooks.mpi.enabled is not 'true': nothing to do")
        return 0
    wanted, asked = os.environ.get("MPI_TYPE", ""), annotations.get("com.hooks.mpi.type", "")
    if wanted and asked and wanted != asked:
        log.debug(f"MPI type {asked!r} requested; this hook provides {wanted!r}: nothing to do")
        return 0
    from hpc_exec.hooks._libs import COMPATIBILITY_TYPES, add_library, split_paths
    from hpc_exec.hooks._mount import allow_device, bind, enter_mount_namespace, resolve_in_rootfs
    from hpc_exec.hooks.mount import ldconfig

    host_libs = split_paths(os.environ.get("MPI_LIBS", ""), "MPI_LIBS")
    if not host_libs:
        raise HookError("MPI_LIBS is not set in the hook env (the host's MPI libraries)")
    deps = split_paths(os.environ.get("MPI_DEPENDENCY_LIBS", ""), "MPI_DEPENDENCY_LIBS")
    extra = split_paths(os.environ.get("BIND_MOUNTS", ""), "BIND_MOUNTS")
    mode = os.environ.get("MPI_COMPATIBILITY_TYPE", "").strip().lower() or "full"
    if mode not in COMPATIBILITY_TYPES:
        raise HookError(f"MPI_COMPATIBILITY_TYPE={mode!r} is not one of "
                        f"{', '.join(COMPATIBILITY_TYPES)}")
    enter_mount_namespace(container.state.pid)
    # Refresh the container's linker cache first: an image's cache can be older than its files
    # (a layer that re-versions libraries), and the plan must see the files as they are.
    ldconfig(container, log)
    replace, add = plan(container, host_libs, mode, log)
    for host, target in replace:
        bind(host, target, readonly=True)
        log.debug(f"replaced {target} with {host}")
    for lib in add + deps:
        log.debug(f"added {lib} as {add_library(container.rootfs, lib, '/usr/lib')}")
    cgroup_pid = container.state.pid if container.state.pid > 1 else os.getpid()
    for path in extra:
        bind(path, resolve_in_rootfs(container.rootfs, path))
        st = os.stat(path)
        if (st.st_mode & 0o170000) in (0o020000, 0o060000):  # character or block device
            kind = "c" if (st.st_mode & 0o170000) == 0o020000 else "b"
            allow_device(cgroup_pid, kind, os.major(st.st_rdev), os.minor(st.st_rdev), "rw")
    ldconfig(container, log)
    return 0


def main() -> int:
    """Console script ``hpc-hook-mpi``: exit status 0 done or not enabled, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
