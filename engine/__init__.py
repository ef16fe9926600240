"""hpc_exec.engine: the embedded container engine (image side in image/ and store/, run side
in runtime/). Installed from the source folder engine/ as ``hpc_exec.engine``."""

from __future__ import annotations

# Image side (engine/api.py): pull once into a squashfs repository, list, look up, remove.
from hpc_exec.engine.api import ImageEntry, images, load, lookup, pull, remove

__all__: list[str] = ["ImageEntry", "images", "load", "lookup", "pull", "remove"]
