"""Snakemake executor plugin ``hpc-container`` (``snakemake --executor hpc-container``).

Snakemake discovers executor plugins only by this top-level package-name prefix, so this package
is a thin shim over ``hpc_exec.snakemake``. Importing it must stay cheap, because every Snakemake
process imports every installed plugin: the three names load on first access (PEP 562), which
Snakemake's plugin registry does right after the import, when its own plugin interfaces (the
bulk of the cost) are loaded already. Not even ``typing`` is imported here.
"""

from __future__ import annotations

import importlib

__all__ = ["Executor", "ExecutorSettings", "common_settings"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(importlib.import_module("hpc_exec.snakemake"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
