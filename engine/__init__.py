"""hpc_exec.engine: the embedded container engine (image side in image/ and store/, run side
in runtime/). Installed from the source folder engine/ as ``hpc_exec.engine``.

This package is the engine's API: the CLI and every front end use the names below and nothing
else of the engine (a layering test keeps it so). They load on first use (PEP 562), so that
``hpc-exec run`` on a squashfs file does not pay for the image side's imports, and the image
side does not pay for the run side's.

Image side (engine/api.py): :func:`pull` once into a squashfs repository, :func:`load`,
:func:`images`, :func:`verify`, :func:`lookup`, :func:`remove`, :func:`repository`.
Run side (engine/runtime/api.py): :func:`resolve`, :func:`inspect`, :func:`run_options`,
:func:`command_line`, :func:`run` (a child process, safe in threaded callers), :func:`execute`
(in this process, for command-line programs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc_exec.engine.api import (
        ImageEntry,
        Verification,
        images,
        load,
        lookup,
        pull,
        remove,
        repository,
        verify,
    )
    from hpc_exec.engine.image.registry import Credentials
    from hpc_exec.engine.runtime.api import (
        Image,
        ImageConfig,
        RunOptions,
        RunResult,
        command_line,
        execute,
        inspect,
        is_squashfs_path,
        resolve,
        mpi_hook_types,
        run,
        run_options,
        site_hooks,
        write_env_file,
    )
    from hpc_exec.mountspec import Device, Mount

_IMAGE_SIDE = ("ImageEntry", "Verification", "images", "load", "lookup", "pull", "remove",
               "repository", "verify")
_RUN_SIDE = ("Image", "ImageConfig", "RunOptions", "RunResult", "command_line", "execute",
             "inspect", "is_squashfs_path", "mount_destination_allowed", "mpi_hook_types",
             "resolve", "run", "run_options", "site_hooks", "write_env_file")
_HOME = {**dict.fromkeys(_IMAGE_SIDE, "hpc_exec.engine.api"),
         **dict.fromkeys(_RUN_SIDE, "hpc_exec.engine.runtime.api"),
         "Credentials": "hpc_exec.engine.image.registry",  # registry login for pull()
         "Device": "hpc_exec.mountspec", "Mount": "hpc_exec.mountspec"}

__all__ = ["Credentials", "Device", "Image", "ImageConfig", "ImageEntry", "Mount", "RunOptions",
           "RunResult", "Verification", "command_line", "execute", "images", "inspect",
           "is_squashfs_path", "load", "lookup", "mount_destination_allowed", "mpi_hook_types",
           "pull", "remove", "repository", "resolve", "run", "run_options", "site_hooks",
           "verify", "write_env_file"]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'hpc_exec.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
