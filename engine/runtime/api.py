"""The run side's Python API for front ends, re-exported as ``hpc_exec.engine.run``.

:func:`run` takes an image reference (looked up in the local, then the centralized
repository), an image entry of the image side, an :class:`~run.Image`, or a path to a squashfs
file, and a command; it returns the container's exit status. It runs the container in a
forked child, so the caller's process never enters the container's namespaces; the caller's
SIGTERM/SIGINT are forwarded while it waits. Engine failures raise
:class:`~hpc_exec.errors.HpcExecError` subclasses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_exec.config import Settings
from hpc_exec.engine.runtime.run import Image, RunOptions
from hpc_exec.engine.runtime.run import run as _run
from hpc_exec.errors import InvalidInput

__all__ = ["bind_to_mount", "resolve_image", "run"]


def bind_to_mount(bind: str | tuple[str, str] | tuple[str, str, bool]) -> str:
    """``"src[:dst][:ro|rw]"`` or ``(src, dst[, readonly])`` as ``--mount`` text."""
    if isinstance(bind, tuple):
        src, dst = bind[0], bind[1]
        ro = bool(bind[2]) if len(bind) > 2 else False
    else:
        parts = bind.split(":")
        ro = False
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            ro = parts.pop() == "ro"
        if len(parts) > 2 or not parts[0]:
            raise InvalidInput(f"invalid bind {bind!r} (expected SRC[:DST][:ro])")
        src, dst = parts[0], parts[-1]
    return f"type=bind,source={src},destination={dst}" + (",readonly" if ro else "")


def resolve_image(image: Any, *, centralized: bool | None = None,
                  settings: Settings | None = None) -> Image:
    if isinstance(image, Image):
        return image
    if isinstance(image, Path) or (isinstance(image, str) and image.startswith("/")
                                   and os.path.isfile(image)):
        return Image.from_squashfs(Path(image))
    if isinstance(image, str):
        from hpc_exec.engine.api import lookup

        return Image.from_entry(lookup(image, centralized=centralized, settings=settings))
    if hasattr(image, "squashfs") and hasattr(image, "metadata"):
        return Image.from_entry(image)
    raise InvalidInput(f"not an image: {image!r}")


def run(image: Any, command: Sequence[str] = (), *,
        binds: Iterable[str | tuple[str, str] | tuple[str, str, bool]] = (),
        mounts: Iterable[str] = (), devices: Iterable[str] = (),
        workdir: str | None = None, home: str | None = None,
        env: Mapping[str, str] | None = None, env_passthrough: Iterable[str] = (),
        host_env: Mapping[str, str] | None = None, entrypoint: str | None = None,
        init: bool = False, pid: str = "host", mpi: bool = False, mpi_type: str | None = None,
        glibc: bool = False, ssh: bool = False, sync: bool = False,
        annotations: Mapping[str, str] | None = None, tty: bool = False,
        centralized: bool | None = None, settings: Settings | None = None) -> int:
    """Run ``command`` in ``image``; return its exit status (see the module docstring).

    ``binds`` use the ``SRC[:DST][:ro]`` form; ``mounts`` the ``--mount`` form. ``home``
    bind-mounts that host directory at the same path and sets ``HOME``. ``env`` sets
    variables (like ``-e NAME=VALUE``); ``env_passthrough`` copies host variables (``-e NAME``).
    The network is always the host's.
    """
    all_mounts = [bind_to_mount(b) for b in binds] + list(mounts)
    env_opts = [*env_passthrough, *(f"{k}={v}" for k, v in (env or {}).items())]
    if home:
        all_mounts.append(bind_to_mount((home, home)))
        env_opts.append(f"HOME={home}")
    options = RunOptions(
        command=tuple(command), mounts=tuple(all_mounts), devices=tuple(devices),
        env=tuple(env_opts), workdir=workdir, entrypoint=entrypoint, init=init, pid=pid,
        mpi=mpi, mpi_type=mpi_type, glibc=glibc, ssh=ssh, sync=sync,
        annotations=tuple(f"{k}={v}" for k, v in (annotations or {}).items()), tty=tty,
        host_env=host_env)
    return _run(options, resolve_image(image, centralized=centralized, settings=settings),
                settings=settings)
