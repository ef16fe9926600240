"""The executor's settings (``--hpc-container-*`` flags) and its common settings.

Contract:

* Every field becomes the flag ``--hpc-container-<name>`` and can also be set through the
  environment variable ``SNAKEMAKE_HPC_CONTAINER_<NAME>`` (``env_var: True``) or a profile key
  ``hpc-container-<name>``; precedence is Snakemake's: command line > profile > environment
  > default.
* Values are checked once, in ``__post_init__``; a bad one raises ``WorkflowError`` naming the
  flag and the value.
* Nothing here probes the cluster: importing this module runs no program (every Snakemake
  process imports every plugin).
"""

# No "from __future__ import annotations" here: Snakemake builds the argparse options from the
# fields' runtime types (Optional[X], not "X | None", which it does not unwrap).
from dataclasses import dataclass, field
from typing import Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

__all__ = ["ExecutorSettings", "common_settings"]

common_settings = CommonSettings(
    non_local_exec=True,  # jobs run on cluster nodes
    implies_no_shared_fs=False,  # they share the workdir, the marker files and the image cache
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,  # the job inherits our environment (--export=ALL)
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,  # the poll interval paces the first check too
)


def _meta(help: str) -> dict[str, object]:
    return {"help": help, "env_var": True, "required": False}


@dataclass
class ExecutorSettings(ExecutorSettingsBase):  # type: ignore[misc]  # untyped base
    poll_interval: float = field(default=1.0, metadata=_meta(
        "Seconds between two status rounds while jobs keep finishing. A round reads the exit "
        "markers on the shared filesystem and runs one squeue for the whole run."))
    max_poll_interval: float = field(default=5.0, metadata=_meta(
        "Upper bound, in seconds, of the poll interval, which grows by half after every round "
        "in which no job finished."))
    keep_logs: bool = field(default=False, metadata=_meta(
        "Keep the Slurm logs (.snakemake/hpc-container/logs/<rule>/<wildcards>/<jobid>.log) "
        "of successful jobs too; by default only the logs of failed jobs are kept."))
    partition: Optional[str] = field(default=None, metadata=_meta(  # noqa: UP045
        "Slurm partition for jobs whose rule sets no slurm_partition resource (default: the "
        "cluster's default partition)."))
    account: Optional[str] = field(default=None, metadata=_meta(  # noqa: UP045
        "Slurm account for jobs whose rule sets no slurm_account resource (default: none, "
        "Slurm's default; the account is never guessed through sacct)."))
    qos: Optional[str] = field(default=None, metadata=_meta(  # noqa: UP045
        "Slurm QoS added to every job (as --slurm-qos of the stock Slurm plugin)."))
    reservation: Optional[str] = field(default=None, metadata=_meta(  # noqa: UP045
        "Slurm reservation for every job (as --slurm-reservation of the stock Slurm plugin)."))
    pull_timeout: float = field(default=3600.0, metadata=_meta(
        "Seconds a job waits for the pre-pull of its image before it fails."))
    submit_threads: int = field(default=2, metadata=_meta(
        "Threads that run sbatch (and wait for image pulls) in parallel."))

    def __post_init__(self) -> None:
        for name in ("poll_interval", "max_poll_interval", "pull_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise WorkflowError(f"--hpc-container-{name.replace('_', '-')} must be a "
                                    f"positive number of seconds, not {value!r}")
        if self.max_poll_interval < self.poll_interval:
            raise WorkflowError(f"--hpc-container-max-poll-interval ({self.max_poll_interval}) "
                                f"is below --hpc-container-poll-interval ({self.poll_interval})")
        if not isinstance(self.submit_threads, int) or isinstance(self.submit_threads, bool) \
                or not 1 <= self.submit_threads <= 64:
            raise WorkflowError("--hpc-container-submit-threads must be an integer from 1 to "
                                f"64, not {self.submit_threads!r}")
