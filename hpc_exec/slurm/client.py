"""The Slurm commands the front ends use, through the one subprocess wrapper.

Contract of :class:`SlurmClient`:

* Every call is an argv list run by :func:`hpc_exec.process.run` with a timeout; a command that
  fails or times out raises :class:`~hpc_exec.errors.CommandFailed` (or ``CommandTimeout``)
  with the tail of its stderr. Output is parsed by the pure functions of
  :mod:`hpc_exec.slurm.parse`.
* :meth:`submit` hands the batch script to ``sbatch --parsable`` on stdin (no ``--wrap``, so no
  quoting layer) and returns the job id.
* :meth:`queue` is ONE ``squeue --name <name> --states=all`` for every job of a run (jobs are
  tagged with the run id as their job name); :meth:`show_jobs` is the ``scontrol show job``
  fallback, one call as well. Neither uses ``sacct``, which fails on clusters without
  accounting.
* :meth:`cancel` is ``scancel`` of explicit job ids, never of a name or a user.
* ``env`` is the environment of every command (default: ours); ``clusters`` adds
  ``--clusters`` to the query and cancel commands for multi-cluster sites.
* ``runner`` replaces :func:`hpc_exec.process.run` in tests (same signature).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpc_exec.slurm.parse import (
    SQUEUE_FORMAT,
    JobInfo,
    parse_duration,
    parse_sacct_detail,
    parse_sbatch,
    parse_scontrol_config,
    parse_scontrol_jobs,
    parse_squeue,
)

__all__ = ["CANCEL_BATCH", "DEFAULT_MIN_JOB_AGE", "SlurmClient"]

log = logging.getLogger(__name__)

CANCEL_BATCH = 500  # job ids per scancel call, far below any argv limit
DEFAULT_MIN_JOB_AGE = 300.0  # Slurm's default MinJobAge, used when scontrol does not say

Runner = Callable[..., Any]


class SlurmClient:
    def __init__(self, *, env: Mapping[str, str] | None = None, timeout: float = 60.0,
                 clusters: str | None = None, runner: Runner | None = None) -> None:
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self.clusters = clusters
        self._runner = runner
        self._accounting: bool | None = None  # does sacct work here? (found out once)

    def _run(self, argv: list[str], desc: str, *, input: str | None = None,
             check: bool = True) -> Any:
        if self._runner is not None:
            run = self._runner
        else:
            from hpc_exec import process  # looked up per call, so tests can swap it

            run = process.run
        return run(argv, timeout=self.timeout, desc=desc, env=self.env, input=input,
                   check=check)

    def _cluster_args(self) -> list[str]:
        return [f"--clusters={self.clusters}"] if self.clusters else []

    def submit(self, script: str, options: Sequence[str]) -> str:
        """Submit ``script`` with sbatch ``options``; the job id."""
        out = self._run(["sbatch", "--parsable", *options], "submitting a job with sbatch",
                        input=script)
        job_id, _cluster = parse_sbatch(out.stdout)
        return job_id

    def queue(self, name: str) -> dict[str, JobInfo]:
        """Every job named ``name`` that slurmctld still knows (pending to MinJobAge after)."""
        out = self._run(["squeue", "--noheader", f"--name={name}", "--states=all",
                         f"--format={SQUEUE_FORMAT}", *self._cluster_args()],
                        "querying jobs with squeue")
        return parse_squeue(out.stdout)

    def show_jobs(self, name: str) -> dict[str, JobInfo]:
        """Like :meth:`queue`, from ``scontrol show job -o`` (the fallback)."""
        out = self._run(["scontrol", "show", "job", "-o", *self._cluster_args()],
                        "querying jobs with scontrol")
        return parse_scontrol_jobs(out.stdout, name=name)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """``scancel`` these jobs (already finished ones are fine)."""
        ids = [str(j) for j in job_ids]
        for start in range(0, len(ids), CANCEL_BATCH):
            batch = ids[start:start + CANCEL_BATCH]
            out = self._run(["scancel", *self._cluster_args(), *batch],
                            f"cancelling {len(batch)} Slurm job(s)", check=False)
            if out.returncode != 0:
                log.warning("scancel %s exited %d: %s", " ".join(batch), out.returncode,
                            out.stderr.strip())

    def config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict."""
        out = self._run(["scontrol", "show", "config"], "reading the Slurm configuration")
        return parse_scontrol_config(out.stdout)

    def min_job_age(self) -> float:
        """Slurm's MinJobAge in seconds: how long squeue shows a finished job."""
        value = self.config().get("MinJobAge")
        return parse_duration(value) if value else DEFAULT_MIN_JOB_AGE

    def accounting_detail(self, job_id: str) -> str | None:
        """``State ExitCode Reason`` of a job from ``sacct``, or None: sacct is asked only when
        it works here (the first failure, e.g. "accounting storage is disabled", ends that for
        this client), and only for extra detail on a failure; status never depends on it."""
        if self._accounting is False:
            return None
        out = self._run(["sacct", "--noheader", "--parsable2", "--jobs", str(job_id),
                         "--format=State,ExitCode,Reason", *self._cluster_args()],
                        "asking sacct about a failed job", check=False)
        if out.returncode != 0:
            self._accounting = False
            return None
        self._accounting = True
        return parse_sacct_detail(out.stdout)
