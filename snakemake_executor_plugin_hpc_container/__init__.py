"""Snakemake executor plugin ``hpc-container`` (``snakemake --executor hpc-container``).

Snakemake discovers executor plugins only by this top-level package-name prefix, so this package
is a thin shim over ``hpc_exec.snakemake``. Importing it must stay cheap, because every Snakemake
process imports every installed plugin.
"""

from __future__ import annotations

from hpc_exec.snakemake import Executor, common_settings

__all__ = ["Executor", "common_settings"]
