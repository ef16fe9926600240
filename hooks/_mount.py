"""Mount plumbing of the hooks: ``--mount``/``--device`` parsing, paths in the rootfs, mount(2).

* :func:`parse_mount` and :func:`parse_device` read the ``--mount`` and ``--device`` syntax of
  ``hpc-exec run`` through the one parser, :mod:`hpc_exec.mountspec` (base floor, standard
  library only), turning its errors into HookError.
* :func:`resolve_in_rootfs` turns a container path into a host path under the rootfs, following
  symlinks as the container would see them, so a symlink in the image can never make a hook
  write outside the rootfs.
* :func:`enter_mount_namespace` joins the container's mount namespace (for createRuntime and
  prestart hooks; a createContainer hook already runs in it), :func:`bind` and
  :func:`bind_device` mount, :func:`allow_device` whitelists a device in a cgroup-v1 devices
  controller.

Errors are :class:`~hpc_exec.hooks._state.HookError`. ``ctypes`` is imported only when a mount
is made.
"""

from __future__ import annotations

import os
import stat

from hpc_exec.hooks._state import HookError

from hpc_exec import mountspec as _spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DeviceSpec",
    "MountSpec",
    "allow_device",
    "bind",
    "bind_device",
    "enter_mount_namespace",
    "mount_filesystem",
    "parse_args",
    "parse_device",
    "parse_mount",
    "resolve_in_rootfs",
]

# The one parser of the --mount/--device syntax lives in the base floor (hpc_exec/mountspec.py,
# standard library only), shared with the engine and the site config; here its InvalidInput
# (a ValueError) becomes the hooks' HookError.
MountSpec = _spec.Mount
DeviceSpec = _spec.Device


def parse_mount(spec: str) -> MountSpec:
    """Parse one ``--mount`` value (HookError naming the bad part)."""
    try:
        return _spec.parse_mount(spec)
    except ValueError as exc:
        raise HookError(str(exc)) from exc


def parse_device(spec: str) -> DeviceSpec:
    """Parse one ``--device`` value: HOST[:CONTAINER][:ACCESS] (HookError when invalid)."""
    try:
        return _spec.parse_device(spec)
    except ValueError as exc:
        raise HookError(str(exc)) from exc


def parse_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split hook arguments into raw ``--mount`` and ``--device`` values (either
    ``--mount=VALUE`` or ``--mount VALUE``); anything else is a HookError."""
    mounts: list[str] = []
    devices: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, sep, value = arg.partition("=")
        if name not in ("--mount", "--device"):
            raise HookError(f"unknown argument {arg!r} (expected --mount=... or --device=...)")
        if not sep:
            i += 1
            if i == len(argv):
                raise HookError(f"{name} needs a value")
            value = argv[i]
        (mounts if name == "--mount" else devices).append(value)
        i += 1
    return mounts, devices


# --- paths inside the rootfs ------------------------------------------------------------------

def resolve_in_rootfs(rootfs: str, path: str, *, follow_last: bool = True) -> str:
    """Host path of container ``path``, resolving symlinks as if ``rootfs`` were ``/``.

    Missing components are kept as they are (so the result can be created); ``..`` never
    climbs above the rootfs. ``follow_last=False`` leaves a final symlink unresolved.
    """
    rootfs = os.path.abspath(rootfs)
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *resolved, part)
        if (parts or follow_last) and os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise HookError(f"too many levels of symbolic links in {path!r} in the container")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(rootfs, *resolved)


def _make_target(target: str, directory: bool) -> None:
    """Create ``target`` (an already resolved host path) as a directory or an empty file."""
    try:
        if directory:
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if not os.path.exists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise HookError(f"cannot create the mount point {target}: {exc.strerror}") from exc


# --- mount(2) and setns(2) --------------------------------------------------------------------

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_RELATIME = 1 << 21
# statvfs f_flag bits that a read-only remount must keep (the kernel refuses to drop locked ones)
_KEEP = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
         (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
         (os.ST_RELATIME, MS_RELATIME))

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _mount(source: str | None, target: str, flags: int) -> None:
    import ctypes

    libc = _c()
    src = os.fsencode(source) if source is not None else None
    if libc.mount(src, os.fsencode(target), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise HookError(f"cannot mount {source or '(remount)'} on {target}: "
                        f"{os.strerror(err)}")


def mount_filesystem(fstype: str, target: str, options: str, *,
                     flags: int = MS_NOSUID | MS_NODEV) -> None:
    """Mount a new ``fstype`` (tmpfs, overlay) with ``options`` on the existing ``target``."""
    import ctypes

    libc = _c()
    if libc.mount(fstype.encode(), os.fsencode(target), fstype.encode(), ctypes.c_ulong(flags),
                  options.encode()) != 0:
        err = ctypes.get_errno()
        raise HookError(f"cannot mount {fstype} on {target} ({options}): {os.strerror(err)}")


def bind(source: str, target: str, *, readonly: bool = False) -> None:
    """Bind-mount host ``source`` on the resolved host path ``target`` (created if missing)."""
    try:
        st = os.stat(source)
    except OSError as exc:
        raise HookError(f"cannot bind-mount {source}: {exc.strerror}") from exc
    _make_target(target, stat.S_ISDIR(st.st_mode))
    _mount(source, target, MS_BIND | MS_REC)
    if readonly:
        keep = os.statvfs(target).f_flag
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for st_flag, ms_flag in _KEEP:
            if keep & st_flag:
                flags |= ms_flag
        _mount(None, target, flags)


def bind_device(source: str, target: str, access: str) -> tuple[str, int, int]:
    """Bind the device node ``source`` on ``target``; returns (c|b, major, minor)."""
    try:
        st = os.stat(source)
    except OSError as exc:
        raise HookError(f"cannot mount device {source}: {exc.strerror}") from exc
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise HookError(f"{source} is not a device")
    bind(source, target, readonly="w" not in access)
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    return kind, os.major(st.st_rdev), os.minor(st.st_rdev)


def allow_device(pid: int, kind: str, major: int, minor: int, access: str) -> bool:
    """Whitelist the device in the cgroup-v1 devices controller of ``pid``.

    Returns False when there is no such controller (cgroup v2: the engine's config.json
    device rules apply; nothing a hook can add).
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "devices" in controllers.split(","):
            if path in ("", "/"):  # the root cgroup allows every device and cannot be changed
                return False
            allow = os.path.join("/sys/fs/cgroup/devices", path.lstrip("/"), "devices.allow")
            try:
                with open(allow, "w", encoding="ascii") as f:
                    f.write(f"{kind} {major}:{minor} {access}\n")
            except OSError as exc:
                raise HookError(f"cannot allow device {kind} {major}:{minor} in {allow}: "
                                f"{exc.strerror}") from exc
            return True
    return False


def enter_mount_namespace(pid: int) -> bool:
    """Join the mount namespace of ``pid`` unless we are in it already; True if we moved.

    A pid of 0 or 1 means "this process's own" (runc passes its init's pid as seen from inside
    the container to createContainer hooks, which already run in the container's namespace).
    """
    if pid <= 1:
        return False
    path = f"/proc/{pid}/ns/mnt"
    try:
        if os.stat(path).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return False
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HookError(f"cannot open the container's mount namespace {path}: "
                        f"{exc.strerror}") from exc
    try:
        import ctypes

        if _c().setns(fd, 0x00020000) != 0:  # CLONE_NEWNS
            err = ctypes.get_errno()
            raise HookError(f"cannot enter the container's mount namespace {path}: "
                            f"{os.strerror(err)}")
    finally:
        os.close(fd)
    return True
