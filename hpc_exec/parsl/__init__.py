"""hpc_exec.parsl: Parsl's HighThroughputExecutor workers and apps in OCI containers on Slurm.

* :class:`ContainerLauncher` (a Parsl launcher, the "provider config" object): every worker
  pool of a block runs inside an image, started by an inner launcher (``SrunLauncher`` by
  default). The image is pulled once on the submit host and checked (Python minor and parsl
  version) before the first block goes out; a mismatch fails the block at once with both
  versions and the fix (:class:`ImageCheckFailed`).
* :class:`FastSlurmProvider`: Parsl's ``SlurmProvider`` with exit markers and a short status
  interval, so a block whose container cannot start is reported failed in seconds and its job
  does not stay behind.
* :func:`container_app`: a ``bash_app`` whose command runs in a fresh container per task, on
  any executor; the image needs no Python.

See docs/parsl.md.
"""

from __future__ import annotations

from hpc_exec.parsl._apps import ContainerApp, container_app, container_command
from hpc_exec.parsl._check import ImageCheckFailed, ImageFacts
from hpc_exec.parsl._launcher import ContainerLauncher
from hpc_exec.parsl._provider import FastSlurmProvider

__all__ = ["ContainerApp", "ContainerLauncher", "FastSlurmProvider", "ImageCheckFailed",
           "ImageFacts", "container_app", "container_command"]
