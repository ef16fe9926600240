"""``snakemake --executor hpc-container``: every job a Slurm job, every container through our
engine, every image pulled once.

Contract (shared/DESIGN.md §5, shared/notes/snakemake-integration.md §6):

* **Pre-pull.** Each distinct ``container_img_url`` of the run (group jobs: of their members)
  is pulled once on this host through ``hpc_exec.engine.pull`` (prepull.py) before the first
  job needing it is submitted; pulls of all images the DAG needs start when the executor does.
  A failed pull fails the jobs needing that image at once with the engine's one-line message.
* **Submission.** Jobs are submitted from ``submit_threads`` threads: wait for the job's
  images, then one ``sbatch`` (jobs.py builds it). The job name is the run id.
* **Inside the job.** The batch script puts ``.snakemake/hpc-container/bin`` (holding
  ``apptainer`` -> ``hpc-exec-apptainer``) first on PATH and runs the inner Snakemake, to which
  :meth:`additional_general_args` adds ``--software-deployment-method apptainer`` (merged with
  the user's methods; the last occurrence wins) and our ``--apptainer-prefix``; stock Snakemake
  then runs every containerised command through our front end. Rules without ``container:``
  run natively. The inner Snakemake gets ``--cores`` = the CPUs asked of Slurm, so the members
  of a group job run in parallel.
* **Status.** Per round: the exit markers, plus ONE ``squeue --name <run id> --states=all``
  (``scontrol show job`` if squeue fails) for the jobs without a marker, inside
  ``status_rate_limiter``; the interval is ``poll_interval``, growing by half per idle round up
  to ``max_poll_interval``. status.py decides; ``sacct`` is never needed: it is asked once,
  for a failed job's extra detail, and never again if it fails (no accounting).
* **Errors** name the Slurm job id and the log path (also passed as ``aux_logs``); successful
  jobs' logs are removed unless ``keep_logs``.
* **Cancel.** Ctrl-C (and a shutdown with jobs still live) ``scancel``\\s exactly the run's
  job ids.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from hpc_exec.errors import HpcExecError
from hpc_exec.slurm.client import DEFAULT_MIN_JOB_AGE, SlurmClient
from hpc_exec.slurm.parse import JobInfo
from hpc_exec.snakemake import jobs as jobmod
from hpc_exec.snakemake.prepull import ImagePuller, pullable
from hpc_exec.snakemake.resources import inner_cores
from hpc_exec.snakemake.settings import ExecutorSettings
from hpc_exec.snakemake.status import Outcome, Tracker, read_markers

__all__ = ["Executor"]

_CLOSING = "closing"  # what _wait_for_images returns when the run is being cancelled


class Executor(RemoteExecutor):  # type: ignore[misc]  # untyped base
    # RemoteExecutor.__init__ starts the status thread *before* it calls __post_init__, so the
    # first check_active_jobs([]) may run before anything below is set: it must not need it.
    _ready = False
    _ended_in_round: list[str] = []  # job ids a status round has already reported ended

    def __post_init__(self) -> None:
        settings = self.workflow.executor_settings
        self.settings: ExecutorSettings = settings if isinstance(settings, ExecutorSettings) \
            else ExecutorSettings()
        if self.workflow.remote_execution_settings.immediate_submit:
            raise WorkflowError("the hpc-container executor does not support "
                                "--immediate-submit: it follows its jobs until they end")
        import uuid  # here, not at import time: it loads platform (about 5 ms)

        self.run_id = str(uuid.uuid4())
        self.workdir = Path.cwd()
        self.layout = jobmod.RunLayout(self.workdir / ".snakemake" / "hpc-container",
                                       self.run_id)
        try:
            self.layout.create()
            self.frontend = jobmod.install_frontend(self.layout.bin_dir)
        except OSError as exc:
            raise WorkflowError(f"cannot set up {self.layout.root}: {exc.strerror or exc}") \
                from exc
        except HpcExecError as exc:
            raise WorkflowError(str(exc)) from exc
        self.client = SlurmClient(env=jobmod.submit_environment(os.environ))
        self.puller = ImagePuller(info=self.logger.info, debug=self.logger.debug)
        self.tracker = Tracker(min_job_age=self._read_min_job_age,
                               marker_grace=max(5.0, float(self._latency_wait())),
                               clock=time.monotonic)
        self._pool = ThreadPoolExecutor(max_workers=self.settings.submit_threads,
                                        thread_name_prefix="hpc-container-submit")
        self._live: dict[str, SubmittedJobInfo] = {}  # Slurm job id -> job, until it ends
        self._closing = False
        self._activity = True  # a job was submitted or ended since the last status round
        self.next_seconds_between_status_checks = self.settings.poll_interval
        self._ready = True
        self.logger.info(f"hpc-container run id (Slurm job name): {self.run_id}")
        if self.frontend is None:
            self.logger.warning(f"{jobmod.FRONTEND} was found neither beside {sys.executable}"
                                " nor on PATH: jobs of rules with 'container:' will fail")
        self._start_pulls()

    # -- settings and helpers ------------------------------------------------------------

    def _latency_wait(self) -> float:
        try:
            return float(self.workflow.execution_settings.latency_wait)
        except (AttributeError, TypeError, ValueError):
            return 5.0

    def _read_min_job_age(self) -> float:
        try:
            age = self.client.min_job_age()
        except HpcExecError as exc:
            self.logger.warning(f"could not read MinJobAge ({exc}); assuming "
                                f"{DEFAULT_MIN_JOB_AGE:g} s")
            return DEFAULT_MIN_JOB_AGE
        self.logger.debug(f"Slurm MinJobAge: {age:g} s")
        return age

    def _start_pulls(self) -> None:
        """Start the pulls of every image the DAG needs now (later jobs join them)."""
        try:
            needed = {url for job in self.workflow.dag.needrun_jobs() if not job.is_local
                      for url in jobmod.images_of(job)}
        except Exception as exc:  # noqa: BLE001 - an optimisation only; run_job pulls anyway
            self.logger.debug(f"not pre-pulling from the DAG: {exc}")
            return
        if needed and self.frontend is not None:
            for url in sorted(u for u in needed if pullable(u)):
                self.puller.request(url)

    def additional_general_args(self) -> str:
        methods = set(self.workflow.deployment_settings.deployment_method)
        methods.add(DeploymentMethod.APPTAINER)
        return " ".join([
            "--software-deployment-method",
            *sorted(m.item_to_choice() for m in methods),
            "--apptainer-prefix", shlex.quote(str(self.layout.images_dir)),
        ])

    def get_job_args(self, job: Any, **kwargs: Any) -> str:
        # the inner Snakemake may use the CPUs this job asked for (last --cores wins): group
        # members then run in parallel, and "all" never means all of a shared node
        cores = inner_cores(job.resources, int(job.threads))
        return f"{super().get_job_args(job)} --cores {cores}"

    # -- submission ----------------------------------------------------------------------

    def run_job(self, job: Any) -> None:
        for url in jobmod.images_of(job):
            if pullable(url) and self.frontend is not None:
                self.puller.request(url)
        self._pool.submit(self._prepare_and_submit, job)

    def _prepare_and_submit(self, job: Any) -> None:
        try:
            problem = self._wait_for_images(job)
            if problem == _CLOSING:
                return
            if problem is not None:
                self._fail(SubmittedJobInfo(job), problem)
                return
            self._submit(job)
        except Exception as exc:  # noqa: BLE001 - a job must fail, never vanish
            if isinstance(exc, HpcExecError | WorkflowError):
                message = f"submitting it to Slurm failed: {exc}"
            else:
                self.logger.error(f"hpc-container: unexpected error submitting job {job.jobid}: "
                                  f"{type(exc).__name__}: {exc}")
                message = f"submitting it to Slurm failed: {type(exc).__name__}: {exc}"
            self._fail(SubmittedJobInfo(job), message)

    def _wait_for_images(self, job: Any) -> str | None:
        urls = jobmod.images_of(job)
        if urls and self.frontend is None:
            return (f"it needs the image {urls[0]}, but the apptainer front end "
                    f"{jobmod.FRONTEND} is not installed beside {sys.executable}")
        deadline = time.monotonic() + self.settings.pull_timeout
        for url in urls:
            if not pullable(url):
                continue
            pull = self.puller.request(url)
            while not pull.wait(0.5):
                if self._closing:
                    return _CLOSING
                if time.monotonic() > deadline:
                    return (f"the pull of image {url} did not finish within "
                            f"{self.settings.pull_timeout:g} s (--hpc-container-pull-timeout)")
            if pull.error is not None:
                return f"pulling its image {url} failed: {pull.error}"
        return None

    def _submit(self, job: Any) -> None:
        sub = jobmod.submission(job, self.format_job_exec(job), layout=self.layout,
                                workdir=self.workdir, settings=self.settings)
        sub.log_pattern.parent.mkdir(parents=True, exist_ok=True)
        if self._closing:
            return
        if jobmod.cluster_of(job):  # squeue and scancel must ask every cluster (as the stock
            self.client.clusters = "all"  # plugin's scancel does), not just the default one
        job_id = self.client.submit(sub.script, sub.options)
        info = SubmittedJobInfo(job, external_jobid=job_id, aux={"log": sub.log(job_id)})
        with self.lock:
            cancel = self._closing
            if not cancel:
                self._live[job_id] = info
                self.tracker.submitted(job_id)
                self._activity = True
        if cancel:  # Ctrl-C came while sbatch ran
            self.client.cancel([job_id])
            return
        self.logger.info(f"Job {job.jobid} submitted as Slurm job {job_id} "
                         f"(log: {sub.log(job_id)})")
        self.report_job_submission(info)

    # -- status --------------------------------------------------------------------------

    def _query(self) -> tuple[dict[str, JobInfo], bool]:
        try:
            return self.client.queue(self.run_id), True
        except HpcExecError as exc:
            self.logger.warning(f"squeue failed ({exc}); asking scontrol show job")
        try:
            return self.client.show_jobs(self.run_id), True
        except HpcExecError as exc:
            self.logger.warning(f"scontrol show job failed too ({exc}); trying again later")
        return {}, False

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """One status round. It never raises: an exception here would end Snakemake's status
        thread, silently when the scheduler does not exist yet, and the run would wait forever
        for jobs that are long done. A failed round is logged and the jobs stay active."""
        if not active_jobs or not self._ready:
            if self._ready:
                self.next_seconds_between_status_checks = self.settings.poll_interval
            for info in active_jobs:
                yield info
            return
        self._ended_in_round = []
        try:
            done: list[SubmittedJobInfo] = []
            async for info in self._status_round(active_jobs):
                done.append(info)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self.logger.error(f"hpc-container: status round failed ({type(exc).__name__}: "
                              f"{exc}); trying again")
            ended = set(self._ended_in_round)
            for info in active_jobs:
                if str(info.external_jobid) not in ended:
                    yield info
            return
        for info in done:
            yield info

    async def _status_round(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        markers = read_markers(self.layout.status_dir)
        states: dict[str, JobInfo] = {}
        queried = True
        # Slurm is asked unless every job left a 0 marker: a job without one is still running
        # or was killed, and for a failed one Slurm's final state may say why (TIMEOUT, OOM).
        if any(markers.get(j.external_jobid) != 0 for j in active_jobs):
            async with self.status_rate_limiter:
                states, queried = self._query()
        ended = False
        for info in active_jobs:
            job_id = str(info.external_jobid)
            verdict = self.tracker.decide(job_id, markers, states.get(job_id), queried=queried)
            if verdict.outcome is Outcome.ACTIVE:
                yield info
                continue
            ended = True
            self._ended_in_round.append(job_id)
            self._forget(job_id)
            if verdict.outcome is Outcome.SUCCESS:
                self._succeeded(info)
            else:
                self._fail(info, f"Slurm job {job_id} {verdict.message}"
                           + self._accounting_detail(job_id))
        with self.lock:
            activity, self._activity = self._activity or ended, False
        current = self.next_seconds_between_status_checks or self.settings.poll_interval
        self.next_seconds_between_status_checks = self.settings.poll_interval if activity \
            else min(self.settings.max_poll_interval, current * 1.5)

    def _accounting_detail(self, job_id: str) -> str:
        """"; sacct: ..." where accounting works (never needed: status comes without it)."""
        try:
            detail = self.client.accounting_detail(job_id)
        except HpcExecError as exc:
            self.logger.debug(f"sacct about job {job_id}: {exc}")
            return ""
        return f"; sacct: {detail}" if detail else ""

    def _forget(self, job_id: str) -> None:
        with self.lock:
            self._live.pop(job_id, None)
        self.tracker.forget(job_id)
        self.layout.marker(job_id).unlink(missing_ok=True)

    def _succeeded(self, info: SubmittedJobInfo) -> None:
        log = (info.aux or {}).get("log")
        if log is not None and not self.settings.keep_logs:
            Path(log).unlink(missing_ok=True)
            _remove_empty_dirs(Path(log).parent, self.layout.logs_dir)
        self.report_job_success(info)

    def _fail(self, info: SubmittedJobInfo, message: str) -> None:
        log = (info.aux or {}).get("log")
        if log is not None:
            message += f"; log: {log}"
        kwargs = {"aux_logs": [str(log)]} if log is not None else {}
        if info.job.is_group():  # Snakemake does not print the message of a group's error
            self.logger.error(f"Error in group {jobmod.group_name(info.job)}: {message}")
        self.report_job_error(info, msg=message + "\n", **kwargs)

    # -- cancel and shutdown -------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        with self.lock:
            self._closing = True
            ids = set(self._live) | {str(j.external_jobid) for j in active_jobs
                                     if j.external_jobid}
            self._live.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if ids:
            self.logger.info(f"Cancelling {len(ids)} Slurm job(s) of run {self.run_id}")
            try:
                self.client.cancel(sorted(ids, key=_job_id_key))
            except HpcExecError as exc:
                self.logger.error(f"scancel failed: {exc}")

    def shutdown(self) -> None:
        with self.lock:
            self._closing = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        super().shutdown()
        with self.lock:
            leftover = sorted(self._live, key=_job_id_key)
            self._live.clear()
        if leftover:
            self.logger.warning(f"Cancelling {len(leftover)} Slurm job(s) still running at "
                                f"shutdown: {' '.join(leftover)}")
            try:
                self.client.cancel(leftover)
            except HpcExecError as exc:
                self.logger.error(f"scancel failed: {exc}")
        shutil.rmtree(self.layout.status_dir, ignore_errors=True)


def _job_id_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
