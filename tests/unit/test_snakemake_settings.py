"""The plugin as Snakemake's registry sees it: every setting a --hpc-container-* flag with help
text and a SNAKEMAKE_HPC_CONTAINER_* variable; bad values fail with one line naming the flag."""

from __future__ import annotations

import dataclasses

import pytest
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

from hpc_exec.snakemake import Executor, ExecutorSettings, common_settings


def test_registry_finds_the_plugin_and_its_settings() -> None:
    plugin = ExecutorPluginRegistry().get_plugin("hpc-container")
    assert plugin.executor is Executor and plugin.common_settings is common_settings
    info = plugin.get_settings_info()
    names = {f.name for f in dataclasses.fields(ExecutorSettings)}
    assert {i["name"] for i in info} == names
    for item in info:
        assert item["cliarg"] == "--hpc-container-" + item["name"].replace("_", "-")
        assert item["env_var"] == "SNAKEMAKE_HPC_CONTAINER_" + item["name"].upper()
        assert len(item["help"]) > 30


def test_settings_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import configargparse

    plugin = ExecutorPluginRegistry().get_plugin("hpc-container")
    parser = configargparse.ArgumentParser()
    plugin.register_cli_args(parser, "executor")
    monkeypatch.setenv("SNAKEMAKE_HPC_CONTAINER_PARTITION", "long")
    args = parser.parse_args(["--hpc-container-poll-interval", "0.5",
                              "--hpc-container-keep-logs"])
    settings = plugin.get_settings(args)
    assert settings.poll_interval == 0.5 and settings.keep_logs is True
    assert settings.partition == "long" and settings.submit_threads == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"poll_interval": 0}, ("--hpc-container-poll-interval must be a positive number of "
                            "seconds, not 0")),
    ({"max_poll_interval": 0.5}, ("--hpc-container-max-poll-interval (0.5) is below "
                                  "--hpc-container-poll-interval (1.0)")),
    ({"submit_threads": 0}, ("--hpc-container-submit-threads must be an integer from 1 to 64, "
                             "not 0")),
    ({"pull_timeout": -1.0}, "--hpc-container-pull-timeout must be a positive number"),
])
def test_bad_values_name_the_flag(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(WorkflowError) as err:
        ExecutorSettings(**kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_common_settings() -> None:
    assert common_settings.non_local_exec and not common_settings.implies_no_shared_fs
    assert not common_settings.pass_envvar_declarations_to_cmd
    assert common_settings.init_seconds_before_status_checks == 0
