"""hpc_exec.engine: the embedded container engine (image side in image/ and store/, run side
in runtime/). Installed from the source folder engine/ as ``hpc_exec.engine``.

The names below load on first use (PEP 562), so that ``hpc-exec run`` on a squashfs file does
not pay for the image side's imports, and the image side does not pay for the run side's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc_exec.engine.api import ImageEntry, images, load, lookup, pull, remove
    from hpc_exec.engine.runtime.api import run

# Image side (engine/api.py): pull once into a squashfs repository, list, look up, remove.
_IMAGE_SIDE = ("ImageEntry", "images", "load", "lookup", "pull", "remove")
# Run side (engine/runtime/api.py): run a container, return its exit status.
_RUN_SIDE = ("run",)

__all__: list[str] = [*_IMAGE_SIDE, *_RUN_SIDE]


def __getattr__(name: str) -> Any:
    if name in _IMAGE_SIDE:
        return getattr(importlib.import_module("hpc_exec.engine.api"), name)
    if name in _RUN_SIDE:
        return getattr(importlib.import_module("hpc_exec.engine.runtime.api"), name)
    raise AttributeError(f"module 'hpc_exec.engine' has no attribute {name!r}")
