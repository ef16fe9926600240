"""The user-mount rules of the site config (the ``--mount``/``--device`` syntax itself is
parsed once, at the edges, by :mod:`hpc_exec.mountspec`).

:func:`check_user_destination` applies the rules to a destination: never ``/`` nor a path the
runtime itself mounts or writes (:data:`RUNTIME_PATHS`, :data:`RUNTIME_PREFIXES`: runc would
otherwise create device nodes and ``/etc`` files in the host's source directory, issue 12
item 7), and then ``userMounts``: not one of ``notAllowedPaths`` nor under one of
``notAllowedPrefixesOfPath``. It touches no file; a forbidden destination raises
:class:`~hpc_exec.errors.SecurityError`.

Checking the destination *text* is not enough: runc follows symlinks inside the rootfs, and
inside the sources of the mounts made before (issue 12, item 6). :func:`resolve_destination`
therefore resolves a destination as runc will (component by component, symlinks followed
inside the container's root, ``..`` stopping at ``/``), looking at the mounted image and at
those sources; the run side checks the resolved path and hands runc that path, which has no
symlink left to follow.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from hpc_exec.errors import SecurityError

__all__ = ["RUNTIME_PATHS", "RUNTIME_PREFIXES", "check_user_destination",
           "resolve_destination"]

# What runc and the engine put into every container (engine/runtime/spec.py, bundle.py): a user
# mount there would hide them or make runc write into the mount's host source.
RUNTIME_PATHS = ("/", "/dev", "/dev/init", "/dev/hpc-exec-idmap", "/dev/ptmx", "/dev/stdin",
                 "/dev/stdout", "/dev/stderr", "/dev/core", "/dev/console", "/etc/passwd",
                 "/etc/group", "/etc/hosts")
RUNTIME_PREFIXES = ("/proc", "/sys", "/dev/fd", "/dev/pts", "/dev/shm", "/dev/mqueue")
# Container paths that are not the image's: runc mounts fresh filesystems or host binds there.
_NOT_THE_IMAGE = ("/proc", "/sys", "/dev")
MAX_LINKS = 40  # as the kernel's path walk (ELOOP)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return path == prefix or path.startswith(prefix + "/") or prefix == "/"


def check_user_destination(destination: str, not_allowed_prefixes: Iterable[str],
                           not_allowed_paths: Iterable[str]) -> None:
    """Refuse a user mount destination the runtime or the site rules forbid (SecurityError
    naming the rule)."""
    dst = posixpath.normpath(destination)
    if dst.startswith("//"):
        dst = "/" + dst.lstrip("/")
    for path in RUNTIME_PATHS:
        if dst == path:
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"the runtime owns '{path}'")
    for prefix in RUNTIME_PREFIXES:
        if _under(dst, prefix):
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"the runtime owns '{prefix}'")
    for path in not_allowed_paths:
        if dst == posixpath.normpath(path):
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"destination cannot be '{path}'")
    for prefix in not_allowed_prefixes:
        if _under(dst, posixpath.normpath(prefix)):
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"destination cannot be a subdirectory of '{prefix}'")


def _host_path(rootfs: Path, path: str, earlier: Sequence[tuple[str, str]]) -> str | None:
    """Where container ``path`` lives on the host (in this mount namespace): in the source of
    the last earlier mount that covers it, else in the rootfs; None where runc mounts a fresh
    filesystem (nothing of the image or the user is there to follow)."""
    for dest, source in reversed(earlier):
        if path == dest:
            return source
        if path.startswith(dest.rstrip("/") + "/"):
            return source + path[len(dest.rstrip("/")):]
    for other in _NOT_THE_IMAGE:
        if _under(path, other):
            return None
    return str(rootfs) + path


def resolve_destination(rootfs: Path, destination: str,
                        earlier: Sequence[tuple[str, str]] = ()) -> str:
    """The container path ``destination`` names once every symlink in it is followed inside
    the container, as runc's mount does: in the image under ``rootfs`` and in the host sources
    of the ``earlier`` mounts ((resolved destination, real path of the host source) in mount
    order; the caller resolves each source once). A link
    never leaves the root (``..`` at ``/`` stays at ``/``); a component that does not exist
    is taken as it is (runc creates it). SecurityError after :data:`MAX_LINKS` links."""
    base = list(earlier)
    todo = [p for p in destination.split("/") if p]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        path = "/" + "/".join([*done, part])
        host = _host_path(rootfs, path, base)
        if host is None:
            done.append(part)
            continue
        try:
            st = os.lstat(host)
        except OSError:  # missing: runc creates it, there is no link to follow
            done.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise SecurityError(f"mount destination {destination!r}: too many symbolic links")
        try:
            target = os.readlink(host)
        except OSError as exc:
            raise SecurityError(f"mount destination {destination!r}: cannot read the "
                                f"symbolic link {path}: {exc.strerror}") from exc
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p] + todo
    return "/" + "/".join(done)
