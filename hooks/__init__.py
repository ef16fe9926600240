"""hpc_exec.hooks: OCI hook programs, standard library only, one module per hook.
Installed from the source folder hooks/ as ``hpc_exec.hooks``."""

from __future__ import annotations

__all__: list[str] = []
