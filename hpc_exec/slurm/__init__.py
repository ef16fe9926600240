"""The Slurm driver shared by the front ends (sbatch, squeue, scontrol, scancel).

* :mod:`~hpc_exec.slurm.parse`: pure parsers for the commands' output and the job-state table
  (:data:`STATES`, :class:`Status`; TIMEOUT is its own terminal status);
* :mod:`~hpc_exec.slurm.template`: the batch script, from one :class:`string.Template`, with an
  optional exit-status marker on the shared filesystem;
* :mod:`~hpc_exec.slurm.client`: :class:`SlurmClient`, the commands as argv lists through
  :func:`hpc_exec.process.run`. Every job of a run is tagged with the run id (its job name), so
  one ``squeue --name <run id> --states=all`` covers the whole run; ``scontrol show job`` is the
  fallback; ``sacct`` is never needed.

Importing this package is cheap (standard library only) and runs no command.
"""

from __future__ import annotations

from hpc_exec.slurm.client import SlurmClient
from hpc_exec.slurm.parse import STATES, JobInfo, SlurmOutputError, Status
from hpc_exec.slurm.template import render_batch_script

__all__ = ["STATES", "JobInfo", "SlurmClient", "SlurmOutputError", "Status",
           "render_batch_script"]
