"""Mount hook: bind-mount host files, directories and devices into the container.

Contract (docs/hooks.md; a ``createContainer`` hook, or ``createRuntime``/``prestart``, where it
enters the mount namespace of the state's pid itself):

* Arguments: any number of ``--mount=<spec>`` and ``--device=<spec>`` in the formats of
  ``hpc-exec run`` (hooks/_mount.py). No arguments: exit 0 with a DEBUG line.
* ``<FI_PROVIDER_PATH>`` in a ``--mount`` is replaced by, in order: ``FI_PROVIDER_PATH`` from
  the container env; the directory of ``libfabric.so*`` in the container's linker cache plus
  ``/libfabric`` (libfabric's own default); ``/usr/lib``.
* Every argument is checked before anything is mounted. Destinations are resolved inside the
  rootfs (config.json ``root.path``) with the container's symlinks, and created if missing.
  A ``--device`` is bind-mounted (read-only without ``w`` access) and whitelisted in the
  container's cgroup-v1 devices controller when there is one.
* Optional hook env ``LDCONFIG_PATH``: a trusted host ``ldconfig`` run as
  ``ldconfig -r <rootfs>`` after the mounts (timeout ``LDCONFIG_TIMEOUT``, default 60 s).
* Exit 1 with one error line when an argument is invalid or a mount fails.
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks import _ldcache
from hpc_exec.hooks._mount import (
    allow_device,
    bind,
    bind_device,
    enter_mount_namespace,
    parse_args,
    parse_device,
    parse_mount,
    resolve_in_rootfs,
)
from hpc_exec.hooks._state import (
    Container,
    Log,
    env_seconds,
    exit_now,
    read_container,
    run_hook,
    run_program,
)

__all__ = ["FI_PROVIDER_PATH", "fi_provider_path", "main"]

HOOK = "mount"
FI_PROVIDER_PATH = "<FI_PROVIDER_PATH>"


def fi_provider_path(container: Container) -> str:
    """The value of the ``<FI_PROVIDER_PATH>`` wildcard for this container."""
    value = container.env.get("FI_PROVIDER_PATH", "").strip()
    if value:
        return value
    found = _ldcache.find(_ldcache.read(container.rootfs), "libfabric.so")
    if found:
        return os.path.join(os.path.dirname(found[0][1]), "libfabric")
    return "/usr/lib"


def ldconfig(container: Container, log: Log) -> None:
    """Refresh the container's linker cache with ``LDCONFIG_PATH``, when the hook env has it."""
    path = os.environ.get("LDCONFIG_PATH", "").strip()
    if not path:
        return
    timeout = env_seconds(os.environ, "LDCONFIG_TIMEOUT", 60.0)
    run_program([path, "-r", container.rootfs], timeout=timeout,
                what="refreshing the container's linker cache")
    log.debug(f"ran {path} -r {container.rootfs}")


def _run(log: Log) -> int:
    container = read_container()
    raw_mounts, raw_devices = parse_args(sys.argv[1:])
    if not raw_mounts and not raw_devices:
        log.debug("no --mount or --device arguments: nothing to mount")
        return 0
    if any(FI_PROVIDER_PATH in m for m in raw_mounts):
        value = fi_provider_path(container)
        log.debug(f"{FI_PROVIDER_PATH} is {value}")
        raw_mounts = [m.replace(FI_PROVIDER_PATH, value) for m in raw_mounts]
    mounts = [parse_mount(m) for m in raw_mounts]
    devices = [parse_device(d) for d in raw_devices]
    enter_mount_namespace(container.state.pid)
    for m in mounts:
        target = resolve_in_rootfs(container.rootfs, m.destination)
        bind(m.source, target, readonly=m.readonly)
        log.debug(f"mounted {m.source} on {m.destination}{' (read-only)' if m.readonly else ''}")
    cgroup_pid = container.state.pid if container.state.pid > 1 else os.getpid()
    for d in devices:
        target = resolve_in_rootfs(container.rootfs, d.destination)
        kind, major, minor = bind_device(d.source, target, d.access)
        allowed = allow_device(cgroup_pid, kind, major, minor, d.access)
        log.debug(f"mounted device {d.source} ({kind} {major}:{minor}) on {d.destination}"
                  f"{'' if allowed else '; no cgroup-v1 devices controller to whitelist it in'}")
    ldconfig(container, log)
    return 0


def main() -> int:
    """Console script ``hpc-hook-mount``: exit status 0 mounted or nothing to do, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
