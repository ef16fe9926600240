"""Snakemake executor plugin ``hpc-container`` (re-exported by the top-level shim
``snakemake_executor_plugin_hpc_container``, the only name Snakemake discovers).

* :mod:`~hpc_exec.snakemake.settings`: ``ExecutorSettings`` (``--hpc-container-*``) and
  ``common_settings``;
* :mod:`~hpc_exec.snakemake.executor`: the ``Executor`` (a ``RemoteExecutor``);
* :mod:`~hpc_exec.snakemake.resources`: Snakemake resources -> sbatch options, as the stock
  Slurm plugin maps them;
* :mod:`~hpc_exec.snakemake.jobs`: the run's files and one job's sbatch call;
* :mod:`~hpc_exec.snakemake.status`: exit markers + squeue -> success, failure or active;
* :mod:`~hpc_exec.snakemake.prepull`: each image pulled once on the submit host.

Importing this package loads the Snakemake plugin interfaces and the Slurm driver, never the
engine, parsl or yaml: the engine is imported when the first image is pulled. docs/snakemake.md
is the user's page.
"""

from __future__ import annotations

from hpc_exec.snakemake.executor import Executor
from hpc_exec.snakemake.settings import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
