"""Ctrl-C of a running workflow scancels its jobs: none is left in squeue, each ends CANCELLED,
and Snakemake exits."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from hpc_exec import process

from .conftest import RUN_ID, Smk, submitted

pytestmark = pytest.mark.requires("root", "slurm")

SNAKEFILE = '''
rule all:
    input: expand("slept.{i}", i=range(3))
    localrule: True

rule sleep:
    output: "slept.{i}"
    shell: "sleep 600; touch {output}"
'''


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


def test_ctrl_c_leaves_no_job_of_the_run_in_squeue(smk: Smk) -> None:
    wd = smk.workdir("cancel", SNAKEFILE)
    log = wd / "snakemake.out"
    job_ids: list[str] = []
    with open(log, "wb") as out:
        proc = smk.launch(wd, out, "--jobs", "3")
        try:
            def text() -> str:
                return log.read_text(errors="replace")

            _wait_for(lambda: len(submitted(text())) == 3, 300, "three submitted jobs")
            run_id = RUN_ID.search(text())
            assert run_id is not None
            job_ids = [slurm_id for slurm_id, _ in submitted(text()).values()]
            assert set(job_ids) <= set(smk.queued(run_id[1]))
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
                if job_ids:
                    process.run(["scancel", *job_ids], env=smk.env, timeout=60,
                                desc="cleaning up after a failed test", check=False)
    # scancel is asynchronous: jobs may show COMPLETING for a moment
    _wait_for(lambda: smk.queued(run_id[1]) == {}, 60, "the run's jobs to leave squeue")
    states = smk.queued(run_id[1], all_states=True)
    assert {states[j] for j in job_ids} == {"CANCELLED"}, states
    assert f"Cancelling 3 Slurm job(s) of run {run_id[1]}" in log.read_text()
