"""hpc_exec.engine: the embedded container engine (image side in image/ and store/, run side
in runtime/). Installed from the source folder engine/ as ``hpc_exec.engine``."""

from __future__ import annotations

__all__: list[str] = []
