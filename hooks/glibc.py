"""Glibc hook: give the container the host's newer glibc (e.g. for host MPI libraries).

Contract (docs/hooks.md; a ``createContainer`` hook, or ``createRuntime``; no arguments):

* Applies when the annotation ``com.hooks.glibc.enabled`` is ``true`` (``--glibc``, ``--mpi``)
  and the container has a ``libc.so.6`` in its linker cache; otherwise exits 0 (DEBUG line).
* Hook env: ``GLIBC_LIBS`` (colon-separated host glibc libraries, required, including
  ``libc.so.6``), optional ``LDCONFIG_PATH`` (host ldconfig, run as ``ldconfig -r <rootfs>``).
* Versions come from the libraries themselves ("release version X.Y" in libc.so.6). Only when
  the host's glibc is newer than the container's: each host library replaces, by read-only
  bind, the container's libraries with the same soname (``DT_SONAME``); host libraries without
  a counterpart are added next to the container's libc.so.6. A container glibc as new as the
  host's is left alone (exit 0, DEBUG line).
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Only what the not-applicable path needs is imported here; the rest once the hook applies.
from hpc_exec.hooks._state import HookError, Log, exit_now, read_container, run_hook

__all__ = ["main"]

HOOK = "glibc"


def _run(log: Log) -> int:
    container = read_container()
    if container.annotations.get("com.hooks.glibc.enabled", "").lower() != "true":
        log.debug("annotation com.hooks.glibc.enabled is not 'true': nothing to do")
        return 0
    from hpc_exec.hooks import _ldcache
    from hpc_exec.hooks._libs import add_library, elf_soname, glibc_version, split_paths
    from hpc_exec.hooks._mount import bind, enter_mount_namespace, resolve_in_rootfs
    from hpc_exec.hooks.mount import ldconfig

    host_libs = split_paths(os.environ.get("GLIBC_LIBS", ""), "GLIBC_LIBS")
    if not host_libs:
        raise HookError("GLIBC_LIBS is not set in the hook env (the host's glibc libraries)")
    enter_mount_namespace(container.state.pid)
    cache = _ldcache.read(container.rootfs)
    container_libc = [p for s, p in cache if s == "libc.so.6"]
    if not container_libc:
        log.debug("no libc.so.6 in the container's linker cache (static or non-glibc image): "
                  "nothing to do")
        return 0
    sonames = {lib: elf_soname(os.path.realpath(lib)) or os.path.basename(lib)
               for lib in host_libs}
    host_libc = [lib for lib, soname in sonames.items() if soname == "libc.so.6"]
    if not host_libc:
        raise HookError("GLIBC_LIBS has no libc.so.6")
    host_version = glibc_version(os.path.realpath(host_libc[0]))
    container_version = glibc_version(resolve_in_rootfs(container.rootfs, container_libc[0]))
    shown = f"host {'.'.join(map(str, host_version))}, " \
            f"container {'.'.join(map(str, container_version))}"
    if host_version <= container_version:
        log.debug(f"the container's glibc is not older than the host's ({shown}): "
                  "nothing to do")
        return 0
    libdir = os.path.dirname(container_libc[0])
    for lib, soname in sonames.items():
        targets = sorted({resolve_in_rootfs(container.rootfs, p) for s, p in cache
                          if s == soname})
        if targets:
            for target in targets:
                bind(os.path.realpath(lib), target, readonly=True)
                log.debug(f"replaced {target} with {lib}")
        else:
            log.debug(f"added {lib} as {add_library(container.rootfs, lib, libdir)}")
    log.info(f"replaced the container's glibc ({shown})")
    ldconfig(container, log)
    return 0


def main() -> int:
    """Console script ``hpc-hook-glibc``: exit status 0 done or not applicable, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
