"""Snakemake resources -> sbatch and srun options, exactly as snakemake-executor-plugin-slurm 2.8
maps them, so that a profile written for the stock plugin works unchanged.

Contract (pure: no I/O; ``resources`` is any mapping with ``.get``, e.g. ``job.resources``):

* :func:`sbatch_options` returns the resource part of the sbatch argv, in the stock plugin's
  order (``submit_string.get_submit_command`` + ``utils.set_gres_string``): ``--clusters``,
  ``-t runtime``, ``-C constraint``, ``--qos``, ``--mem-per-cpu``/``--mem``, ``--nodes``, the
  QoS and reservation settings, ``--ntasks-per-gpu`` (GPU jobs) or ``--ntasks`` (``tasks`` or 1,
  non-MPI) or the MPI task geometry, the CPU setting, ``slurm_extra``, ``--gres``, ``--gpus``.
  Account and partition come from :func:`account_and_partition` (no sacct guessing).
* :func:`srun_options` are the options of the ``srun -n1`` step that runs a one-task job
  (``--cpus-per-task`` and ``--gpus``, as the stock jobstep plugin sets them).
* ``slurm_extra`` is split like a shell word list and may not set an option the executor
  manages (:data:`MANAGED_OPTIONS`).
* Bad values raise :class:`~hpc_exec.errors.InvalidInput` with one line naming the resource
  (or flag) and the value; the executor turns it into the job's error.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from hpc_exec.errors import InvalidInput

__all__ = ["MANAGED_OPTIONS", "account_and_partition", "cpu_option", "inner_cores",
           "is_gpu_job", "is_multi_task", "sbatch_options", "srun_options",
           "validate_slurm_extra"]

Resources = Mapping[str, Any]

# Options the executor sets itself, as (long form, short form or None, what it is): the stock
# plugin's validation.get_forbidden_slurm_options, plus the two that would break the executor
# (--wrap: the script comes on stdin; --array: one job per Snakemake job).
MANAGED_OPTIONS: tuple[tuple[str, str | None, str], ...] = (
    ("--job-name", "-J", "the job name (the run id)"),
    ("--output", "-o", "the log file"),
    ("--error", "-e", "the log file"),
    ("--parsable", None, "sbatch's output format"),
    ("--export", None, "the job environment"),
    ("--comment", None, "the job comment"),
    ("--chdir", "-D", "the working directory"),
    ("--workdir", None, "the working directory"),
    ("--account", "-A", "the account (resource slurm_account)"),
    ("--partition", "-p", "the partition (resource slurm_partition)"),
    ("--mem", None, "the memory (resource mem_mb)"),
    ("--mem-per-cpu", None, "the memory per CPU (resource mem_mb_per_cpu)"),
    ("--ntasks", "-n", "the number of tasks (resource tasks)"),
    ("--ntasks-per-gpu", None, "the tasks per GPU (resource tasks_per_gpu)"),
    ("--cpus-per-task", "-c", "the CPUs per task (resource cpus_per_task)"),
    ("--cpus-per-gpu", None, "the CPUs per GPU (resource cpus_per_gpu)"),
    ("--time", "-t", "the time limit (resource runtime)"),
    ("--constraint", "-C", "the node constraint (resource constraint)"),
    ("--qos", None, "the QoS (resource qos)"),
    ("--nodes", "-N", "the number of nodes (resource nodes)"),
    ("--clusters", "-M", "the cluster (resource slurm_cluster)"),
    ("--gres", None, "the generic resources (resource gres)"),
    ("--gpus", "-G", "the GPUs (resources gpu, gpu_model)"),
    ("--wrap", None, "the batch script"),
    ("--array", "-a", "one Slurm job per Snakemake job"),
    ("--wait", "-W", "sbatch must return at once (the executor follows the job itself)"),
    ("--test-only", None, "sbatch must submit the job"),
)

_GRES = re.compile(r"^[a-zA-Z0-9_]+(:[a-zA-Z0-9_\.]+)?(:\d+[TGM]?)?$")
_GPU_MODEL = re.compile(r"^[a-zA-Z0-9_\.]+$")


def _int(resources: Resources, name: str) -> int:
    value = resources.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"resource {name}={value!r} must be an integer")
    return value


def is_gpu_job(resources: Resources) -> bool:
    return bool(resources.get("gpu")) or "gpu" in str(resources.get("gres") or "")


def is_multi_task(resources: Resources) -> bool:
    """MPI or more than one task: no ``srun -n1`` around the job, one container per task."""
    tasks = resources.get("tasks") or 0
    return bool(resources.get("mpi")) or (isinstance(tasks, int) and tasks > 1)


def cpu_option(resources: Resources, threads: int) -> str | None:
    """``--cpus-per-task=N`` or ``--cpus-per-gpu=N`` or None (jobstep's get_cpu_setting)."""
    if resources.get("cpus_per_task"):
        cpus = _int(resources, "cpus_per_task")
        return None if cpus < 0 else f"--cpus-per-task={max(1, cpus)}"
    if is_gpu_job(resources) and resources.get("cpus_per_gpu"):
        cpus = _int(resources, "cpus_per_gpu")
        return None if cpus <= 0 else f"--cpus-per-gpu={cpus}"
    return f"--cpus-per-task={max(1, threads)}"


def inner_cores(resources: Resources, threads: int) -> int:
    """Cores the job's own Snakemake may use: what the job asked Slurm for."""
    option = cpu_option(resources, threads)
    if option and option.startswith("--cpus-per-task="):
        return int(option.partition("=")[2])
    return max(1, threads)


def validate_slurm_extra(extra: str, rule: str) -> list[str]:
    """``slurm_extra`` as argv words; InvalidInput if it sets a managed option."""
    try:
        words = shlex.split(extra)
    except ValueError as exc:
        raise InvalidInput(f"slurm_extra {extra!r} of {rule} cannot be split: {exc}") from exc
    for word in words:
        name = word.split("=", 1)[0]
        for long, short, what in MANAGED_OPTIONS:
            # sbatch (getopt_long) takes any unambiguous abbreviation of a long option:
            # --out=… is --output, --chd=… is --chdir
            hit = (name.startswith("--") and len(name) > 3 and long.startswith(name)) or \
                (short is not None and word.startswith(short) and not word.startswith("--"))
            if hit:
                label = name if not name.startswith("--") or name == long else \
                    f"{name} ({long})"
                raise InvalidInput(f"slurm_extra of {rule} sets {label}, which the "
                                   f"hpc-container executor manages ({what})")
    return words


def account_and_partition(resources: Resources, *, account: str | None,
                          partition: str | None) -> list[str]:
    """``-A``/``-p`` from slurm_account/slurm_partition, else from the settings, else none."""
    out = []
    if resources.get("slurm_account"):
        # the stock plugin tries comma/space separated accounts one by one; sbatch takes one
        first = [a for a in re.split(r"[,\s]+", str(resources.get("slurm_account"))) if a]
        out += ["-A", first[0]]
    elif account:
        out += ["-A", account]
    if resources.get("slurm_partition"):
        out += ["-p", str(resources.get("slurm_partition"))]
    elif partition:
        out += ["-p", partition]
    return out


def sbatch_options(resources: Resources, threads: int, *, rule: str, qos: str | None = None,
                   reservation: str | None = None) -> list[str]:
    """The resource options of one sbatch call (module contract)."""
    out: list[str] = []
    cluster = resources.get("cluster") or resources.get("clusters") or \
        resources.get("slurm_cluster")  # the stock plugin's order
    if cluster:
        out += ["--clusters", str(cluster)]
    if resources.get("runtime"):
        out += ["-t", str(resources.get("runtime"))]
    if resources.get("constraint") is not None:
        out += ["-C", str(resources.get("constraint"))]
    if resources.get("qos") is not None:
        out.append(f"--qos={resources.get('qos')}")
    if resources.get("mem_mb_per_cpu"):
        out += ["--mem-per-cpu", str(resources.get("mem_mb_per_cpu"))]
    elif resources.get("mem_mb"):
        out += ["--mem", str(resources.get("mem_mb"))]
    if resources.get("nodes") is not None:
        nodes = resources.get("nodes")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise InvalidInput(f"resource nodes={nodes!r} must be an integer >= 1")
        out.append(f"--nodes={nodes}")
    if qos:
        out.append(f"--qos={qos}")
    if reservation:
        out.append(f"--reservation={reservation}")
    mpi = bool(resources.get("mpi"))
    if is_gpu_job(resources):
        per_gpu = resources.get("tasks_per_gpu")
        if per_gpu is None:
            per_gpu = resources.get("tasks")
        if per_gpu is not None and per_gpu >= 1:
            out.append(f"--ntasks-per-gpu={per_gpu}")
    elif not mpi:
        out.append(f"--ntasks={resources.get('tasks') or 1}")
    if mpi:
        out += _mpi_tasks(resources)
    cpu = cpu_option(resources, threads)
    if cpu:
        out.append(cpu)
    if resources.get("slurm_extra"):
        out += validate_slurm_extra(str(resources.get("slurm_extra")), rule)
    out += _gres(resources)
    return out


def _mpi_tasks(resources: Resources) -> list[str]:
    per_node, tasks = resources.get("tasks_per_node"), resources.get("tasks")
    if not per_node and not tasks:
        raise InvalidInput("an mpi job needs the resource tasks or tasks_per_node")
    if per_node and tasks:
        raise InvalidInput("an mpi job takes tasks or tasks_per_node, not both "
                           f"(tasks={tasks!r}, tasks_per_node={per_node!r})")
    if per_node:
        if _int(resources, "tasks_per_node") <= 1:
            raise InvalidInput(f"resource tasks_per_node={per_node!r} of an mpi job must be "
                               "greater than 1")
        return [f"--ntasks-per-node={per_node}"]
    if tasks == 1:
        raise InvalidInput("resource tasks=1 of an mpi job must be greater than 1")
    return [f"--ntasks={tasks}"]


def _gres(resources: Resources) -> list[str]:
    out = []
    gres = resources.get("gres")
    if gres:
        if not _GRES.match(str(gres)):
            raise InvalidInput(f"resource gres={gres!r} is not NAME, NAME:COUNT or "
                               "NAME:TYPE:COUNT (e.g. gpu:tesla:2)")
        out.append(f"--gres={gres}")
    gpu, model = resources.get("gpu"), resources.get("gpu_model")
    if model:
        if not _GPU_MODEL.match(str(model)):
            raise InvalidInput(f"resource gpu_model={model!r} is not a model name (e.g. tesla)")
        out.append(f"--gpus={model}:{gpu or 1}")
    elif gpu:
        out.append(f"--gpus={gpu}")
    return out


def srun_options(resources: Resources, threads: int) -> list[str]:
    """Options of the ``srun -n1`` step of a one-task job (jobstep plugin's choices)."""
    out = ["-n1", "--cpu-bind=q"]
    cpu = cpu_option(resources, threads)
    if cpu:
        out.append(cpu)
    for key in ("gpus", "gpu", "nvidia_gpu"):
        value = resources.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"resource {key}={value!r} must be an integer")
            if value > 0:
                out.append(f"--gpus={value}")
            break
    return out
