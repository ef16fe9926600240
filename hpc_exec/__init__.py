"""hpc-exec: run workflow tasks in OCI containers on Slurm clusters.

The package holds the CLI, configuration, errors, the one subprocess wrapper and the front ends;
``hpc_exec.engine`` (source folder engine/) is the container engine and ``hpc_exec.hooks``
(source folder hooks/) the OCI hook programs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
