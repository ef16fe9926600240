"""``FastSlurmProvider``: Parsl's SlurmProvider that sees a dead block in seconds.

Why a subclass (docs/parsl.md): ``SlurmProvider.status_polling_interval`` is hard-coded to
60 s, and without accounting its ``squeue`` fallback reports every job that left the queue as
COMPLETED, whatever its exit status. A block whose container cannot start (the image vanished
from the cache, a mount refused) therefore costs a minute and says little. This subclass

* writes an exit marker: the batch script's EXIT trap stores the script's status next to the
  job's ``.stdout``/``.stderr`` in the submit-script dir (shared with the submit host);
* polls every ``status_interval`` seconds (default 2), reading the markers first: a nonzero
  marker makes the block FAILED with its exit code and the job's stderr (Parsl's error
  handler then shows both), and a job still in the queue after its script exited is
  cancelled, so nothing stays behind;
* cancels, when this Python exits, the jobs it submitted that are still active (a script that
  crashed before ``dfk.cleanup()`` would otherwise leave them running). Parsl's threads then
  still keep such a process alive (use ``with parsl.load(config):``), but its blocks are gone.

Everything else is SlurmProvider's, unchanged: its keyword arguments are passed through.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import threading
import weakref
from typing import Any

from parsl.jobs.states import JobState, JobStatus
from parsl.providers import SlurmProvider

from hpc_exec.errors import InvalidInput

__all__ = ["FastSlurmProvider", "marker_path", "read_marker"]

log = logging.getLogger(__name__)

MARKER_VAR = "HPC_EXEC_PARSL_EXIT_MARKER"


def marker_path(stdout_path: str) -> str:
    """The exit marker of the job whose batch output goes to ``stdout_path``."""
    base = stdout_path.removesuffix(".stdout")
    return base + ".exit"


def read_marker(path: str) -> int | None:
    """The status in the marker at ``path``; None while there is none (or half-written)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def trap_lines(marker: str) -> str:
    """Bash lines that make the batch script record its exit status in ``marker``. A script
    that Slurm kills (time limit, scancel: SIGTERM) leaves no marker, as the Snakemake
    executor's template does, so Slurm's own state (TIMEOUT, CANCELLED) says what happened."""
    return (f"export {MARKER_VAR}={shlex.quote(marker)}\n"
            f"trap 'echo $? > \"${MARKER_VAR}.tmp\" && mv -f \"${MARKER_VAR}.tmp\" "
            f"\"${MARKER_VAR}\"' EXIT\n"
            "trap 'trap - EXIT; exit 143' TERM\n"
            "trap 'trap - EXIT; exit 130' INT\n")


class FastSlurmProvider(SlurmProvider):
    """SlurmProvider with exit markers, a short status interval and cleanup at exit.

    Parameters
    ----------
    status_interval : float
        Seconds between status polls (one ``squeue`` per poll for all active blocks;
        SlurmProvider's is 60). Default 2.
    **kwargs
        SlurmProvider's keyword arguments (``partition``, ``nodes_per_block``, ``launcher``,
        ``walltime``, ...).
    """

    def __init__(self, status_interval: float = 2.0, **kwargs: Any) -> None:
        if not 0 < status_interval <= 600:
            raise InvalidInput(f"status_interval must be in (0, 600] seconds, got "
                               f"{status_interval!r}")
        super().__init__(**kwargs)
        self.status_interval = status_interval
        self._kwargs = kwargs
        owner = os.getpid()
        ref = weakref.ref(self)
        # Python joins non-daemon threads (Parsl's) before it runs atexit handlers, so a
        # script that crashed before dfk.cleanup() never gets there: threading's own exit
        # hook (what concurrent.futures uses) runs before that join.
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is not None:
                register(_cancel_at_exit, ref, owner)
        except RuntimeError:  # the interpreter is already shutting down
            pass
        atexit.register(_cancel_at_exit, ref, owner)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"FastSlurmProvider(status_interval={self.status_interval!r}, {args})"

    @property
    def script_dir(self) -> str | None:
        return self.__dict__.get("_script_dir")

    @script_dir.setter
    def script_dir(self, value: str | None) -> None:
        # The DFK sets this at parsl.load, before the executor starts: a launcher that can
        # check its image (ContainerLauncher) starts now, in parallel with the interchange.
        self.__dict__["_script_dir"] = value
        start = getattr(self.launcher, "prepare_in_background", None)
        if value and start is not None:
            start(value)

    @property
    def status_polling_interval(self) -> float:  # type: ignore[override]
        return self.status_interval

    def _write_submit_script(self, template: str, script_filename: str, job_name: str,
                             configs: dict[str, Any]) -> bool:
        marker = marker_path(str(configs["job_stdout_path"]))
        configs["user_script"] = trap_lines(marker) + str(configs["user_script"])
        result: bool = super()._write_submit_script(  # type: ignore[no-untyped-call]
            template, script_filename, job_name, configs)
        return result

    def _status(self) -> None:
        active = [str(jid) for jid, job in self.resources.items()
                  if not job["status"].terminal]
        super()._status()  # type: ignore[no-untyped-call]
        leftovers: list[str] = []
        for jid in active:
            job = self.resources[jid]
            code = read_marker(marker_path(job["job_stdout_path"]))
            if code is None:
                continue
            if not job["status"].terminal:
                leftovers.append(jid)  # the script ended; what is left of the job must go
            paths = {"stdout_path": job["job_stdout_path"],
                     "stderr_path": job["job_stderr_path"]}
            if code == 0:
                job["status"] = JobStatus(JobState.COMPLETED, exit_code=0, **paths)
            else:
                job["status"] = JobStatus(
                    JobState.FAILED, exit_code=code, **paths,
                    message=f"the batch script of Slurm job {jid} exited with status {code}")
        if leftovers:
            log.info("cancelling Slurm jobs %s whose batch script has exited", leftovers)
            self.execute_wait(  # type: ignore[no-untyped-call]
                "scancel " + " ".join(shlex.quote(j) for j in leftovers))

    def active_job_ids(self) -> list[str]:
        """The jobs this provider submitted that are not known to be finished."""
        return [str(jid) for jid, job in self.resources.items()
                if not job["status"].terminal]


def _cancel_at_exit(ref: weakref.ref[FastSlurmProvider], owner: int) -> None:
    provider = ref()
    if provider is None or os.getpid() != owner:
        return
    try:
        jobs = provider.active_job_ids()
        if jobs:
            log.warning("cancelling Slurm jobs %s left by this Parsl run", jobs)
            provider.cancel(jobs)  # type: ignore[no-untyped-call]
    except Exception:
        log.exception("could not cancel the Slurm jobs left by this Parsl run")
