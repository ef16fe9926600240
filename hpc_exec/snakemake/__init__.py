"""Snakemake executor plugin ``hpc-container`` (re-exported by the top-level shim
``snakemake_executor_plugin_hpc_container``, the only name Snakemake discovers).

Status: the executor itself is a later issue. Until it lands this module only declares valid
plugin metadata, so that installing hpc-exec never breaks Snakemake (Snakemake validates every
installed plugin at start-up and refuses to run at all if one is malformed), and an executor that
stops at once with a one-line error instead of pretending to run jobs.
"""

from __future__ import annotations

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import CommonSettings

__all__ = ["Executor", "common_settings"]

common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)


class Executor(RemoteExecutor):
    def __post_init__(self) -> None:
        from hpc_exec import __version__

        raise WorkflowError(
            f"the hpc-container executor is not implemented in hpc-exec {__version__} yet; "
            "use hpc-exec run/pull directly until the Snakemake front end lands"
        )

    def run_job(self, job: object) -> None:  # pragma: no cover - __post_init__ refuses
        raise NotImplementedError

    async def check_active_jobs(self, active_jobs: object) -> None:  # pragma: no cover
        raise NotImplementedError

    def cancel_jobs(self, active_jobs: object) -> None:  # pragma: no cover
        raise NotImplementedError
