"""Snakemake's own test base for executor plugins (``snakemake.common.tests``, shipped with
snakemake 9.27; the stock Slurm plugin's tests use it), run with our executor on the testbed:
its "simple" and "groups" workflows, in this process through Snakemake's API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from snakemake.common.tests import TestWorkflowsLocalStorageBase

from hpc_exec.snakemake import ExecutorSettings

from .conftest import Smk


@pytest.mark.requires("root", "slurm")
class TestWorkflows(TestWorkflowsLocalStorageBase):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _testbed_environment(self, smk: Smk, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        # the executor runs in this process: it reads SLURM_CONF & co from os.environ, and
        # Snakemake changes the working directory
        for key, value in smk.env.items():
            monkeypatch.setenv(key, value)
        cwd = os.getcwd()
        yield
        os.chdir(cwd)

    def get_executor(self) -> str:
        return "hpc-container"

    def get_executor_settings(self) -> Any:
        return ExecutorSettings(poll_interval=0.5)
