"""Where a run keeps its files, and the sbatch call of one Snakemake job.

Contract:

* :class:`RunLayout` owns every path under ``<workdir>/.snakemake/hpc-container/``:
  ``bin/apptainer`` (the front end the jobs find first on PATH), ``images/`` (the
  ``--apptainer-prefix`` of the jobs' Snakemake), ``logs/<rule>/<wildcards>/<slurm id>.log``
  (``group_<name>/`` for group jobs) and ``status/<run id>/<slurm id>.exit`` (exit markers).
* :func:`install_frontend` makes ``bin/apptainer`` a symlink to the ``hpc-exec-apptainer``
  console script (beside ``sys.executable``, else on PATH), atomically (symlink to a temp name,
  then rename), and returns its target, or None when the script is missing.
* :func:`submission` builds one job's sbatch options and batch script: two Snakemake levels,
  the inner ``python -m snakemake ... --mode remote`` command run under ``srun -n1`` built here
  at submit time; for ``tasks > 1`` or ``mpi`` without srun and with
  ``HPC_EXEC_APPTAINER_NTASKS=<tasks>`` so that the front end starts one container per task.
* :func:`submit_environment` is the environment sbatch runs with: ours without the ``SLURM_*``
  variables of any allocation Snakemake itself runs in, but with ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_exec.slurm.template import render_batch_script
from hpc_exec.snakemake import resources as res

__all__ = ["FRONTEND", "NTASKS_VARIABLE", "RunLayout", "Submission", "cluster_of", "group_name",
           "images_of",
           "install_frontend", "submission", "submit_environment"]

FRONTEND = "hpc-exec-apptainer"  # the apptainer-compatible console script of hpc-exec
NTASKS_VARIABLE = "HPC_EXEC_APPTAINER_NTASKS"
KEEP_SLURM = frozenset({"SLURM_CONF", "SLURM_CLUSTERS"})  # client settings, not job context

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


@dataclass(frozen=True)
class RunLayout:
    root: Path  # <workdir>/.snakemake/hpc-container
    run_id: str

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def status_dir(self) -> Path:
        return self.root / "status" / self.run_id

    def create(self) -> None:
        for d in (self.bin_dir, self.images_dir, self.logs_dir, self.status_dir):
            d.mkdir(parents=True, exist_ok=True)

    def marker(self, job_id: str) -> Path:
        return self.status_dir / f"{job_id}.exit"

    def log_dir(self, job: Any) -> Path:
        """``logs/<rule>[/<wildcards>]`` or ``logs/group_<name>`` of a job."""
        if job.is_group():
            return self.logs_dir / _safe(f"group_{group_name(job)}")
        out = self.logs_dir / _safe(job.name)
        wildcards = _wildcards(job)
        return out / wildcards if wildcards else out


def group_name(job: Any) -> str:
    """A group job's group id ("pair"; its ``name`` also lists the member rules)."""
    return str(getattr(job, "groupid", None) or job.name)


def _safe(text: str) -> str:
    """A path component sbatch will not expand (no '%', no '/')."""
    text = _UNSAFE.sub("_", text)[:100]
    return text if text not in ("", ".", "..") else f"_{text}"


def _wildcards(job: Any) -> str:
    try:
        values = [str(v) for v in job.wildcards]
    except (AttributeError, TypeError):
        return ""
    return _safe("_".join(values)) if values else ""


def cluster_of(job: Any) -> str | None:
    """The cluster a job goes to (resource slurm_cluster, cluster or clusters), if any."""
    r = job.resources
    value = r.get("cluster") or r.get("clusters") or r.get("slurm_cluster")
    return str(value) if value else None


def images_of(job: Any) -> list[str]:
    """The distinct container image URLs of a job, or of a group job's members."""
    members = list(job.jobs) if job.is_group() else [job]
    return sorted({url for j in members if (url := getattr(j, "container_img_url", None))})


def install_frontend(bin_dir: Path, *, beside: Path | None = None) -> Path | None:
    """Point ``bin_dir/apptainer`` at the hpc-exec-apptainer script (module contract);
    ``beside`` is where to look first (default: the directory of ``sys.executable``)."""
    from hpc_exec import process  # not at import: the plugin's import stays light

    target = process.installed_program(FRONTEND, beside)
    if target is None:
        return None
    link = bin_dir / "apptainer"
    tmp = bin_dir / f".apptainer.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        from hpc_exec.errors import RepositoryError

        raise RepositoryError(f"cannot create {link}: {exc.strerror or exc}") from exc
    return Path(target)


def submit_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Our environment for sbatch, minus the job context of any enclosing allocation."""
    return {k: v for k, v in environ.items()
            if not k.startswith("SLURM_") or k in KEEP_SLURM}


@dataclass(frozen=True)
class Submission:
    options: list[str]  # sbatch options (after --parsable)
    script: str  # the batch script, fed to sbatch on stdin
    log_pattern: Path  # ".../%j.log"

    def log(self, job_id: str) -> Path:
        return self.log_pattern.with_name(self.log_pattern.name.replace("%j", job_id))


def _comment(job: Any) -> str:
    if job.is_group():
        return f"group_{group_name(job)}"
    wildcards = _wildcards(job)
    return f"rule_{job.name}" + (f"_wildcards_{wildcards}" if wildcards else "")


def submission(job: Any, exec_job: str, *, layout: RunLayout, workdir: Path,
               settings: Any) -> Submission:
    """The sbatch options and script of one job (module contract); no I/O: the caller creates
    the log directory (sbatch does not).

    ``exec_job`` is the shell command line of the inner Snakemake (format_job_exec);
    ``settings`` the ExecutorSettings (partition, account, qos, reservation)."""
    resources = job.resources
    threads = int(job.threads)
    rule = f"group {group_name(job)}" if job.is_group() else f"rule {job.name}"
    log_dir = layout.log_dir(job)
    options = [
        f"--job-name={layout.run_id}",
        f"--output={log_dir / '%j.log'}",
        "--export=ALL",
        f"--comment={_comment(job)}",
        f"--chdir={workdir}",
        *res.account_and_partition(resources, account=settings.account,
                                   partition=settings.partition),
        *res.sbatch_options(resources, threads, rule=rule, qos=settings.qos,
                            reservation=settings.reservation),
    ]
    env = {}
    inner = ["/bin/sh", "-c", exec_job]  # exec_job is shell text (precommand, quoting)
    if res.is_multi_task(resources):
        tasks = resources.get("tasks") or 0
        if not tasks and resources.get("tasks_per_node"):  # on the one default node, if unset
            tasks = int(resources.get("tasks_per_node")) * int(resources.get("nodes") or 1)
        if tasks:
            env[NTASKS_VARIABLE] = str(tasks)
        command = inner
    else:
        command = ["srun", *res.srun_options(resources, threads), *inner]
    script = render_batch_script(
        command, description=f"Snakemake {rule} (job {job.jobid}) of run {layout.run_id}",
        env=env, path_prepend=[str(layout.bin_dir)], marker_dir=str(layout.status_dir))
    return Submission(options, script, log_dir / "%j.log")
