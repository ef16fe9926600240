"""Snakemake executor plugin ``hpc-container`` (``snakemake --executor hpc-container``).

Snakemake discovers executor plugins only by this top-level package-name prefix, so this package
is a thin shim: the implementation lives in ``hpc_exec.snakemake`` (a later issue). Importing it
must stay cheap, because every Snakemake process imports every installed plugin.
"""

from __future__ import annotations

__all__: list[str] = []
