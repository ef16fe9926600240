"""The Slurm driver against the testbed's real Slurm (no accounting): sbatch of a rendered batch
script, the exit marker it writes, one squeue (and scontrol) by run name, scancel by id, and no
marker when Slurm kills the script."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_exec.slurm import SlurmClient, Status, render_batch_script

pytestmark = pytest.mark.requires("slurm")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hpc-exec-driver-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_submit_mark_query_and_cancel(testbed: Any, scratch: Path) -> None:
    client = SlurmClient(env=testbed.environ())
    name = f"hpc-exec-driver-{uuid.uuid4()}"
    options = [f"--job-name={name}", f"--output={scratch}/%j.log", "-t", "5"]
    ids: list[str] = []
    try:
        failing = client.submit(render_batch_script(
            ["sh", "-c", "echo 'to the log'; exit 3"], description="driver test: exit 3",
            marker_dir=str(scratch)), options)
        ids.append(failing)
        held = client.submit(render_batch_script(
            ["sleep", "300"], description="driver test: held", marker_dir=str(scratch)),
            [*options, "--begin=now+3600"])
        ids.append(held)
        sleeper = client.submit(render_batch_script(
            ["sleep", "300"], description="driver test: killed", marker_dir=str(scratch)),
            options)
        ids.append(sleeper)

        wait_for(lambda: (scratch / f"{failing}.exit").exists(), "the exit marker")
        assert (scratch / f"{failing}.exit").read_text() == "3\n"
        assert (scratch / f"{failing}.log").read_text() == "to the log\n"
        wait_for(lambda: client.queue(name)[failing].status is Status.FAILED, "FAILED")
        jobs = client.queue(name)  # one query for the whole "run"
        assert set(jobs) == {failing, held, sleeper}
        assert jobs[held].status is Status.PENDING and jobs[held].reason == "BeginTime"
        shown = client.show_jobs(name)
        assert set(shown) == set(jobs) and shown[failing].exit_code == "3:0"

        wait_for(lambda: client.queue(name)[sleeper].status is Status.RUNNING, "RUNNING")
        client.cancel([held, sleeper])
        wait_for(lambda: {j.state for i, j in client.queue(name).items() if i != failing}
                 == {"CANCELLED"}, "CANCELLED")
        # killed by Slurm: the state counts, the script wrote no marker
        assert sorted(p.name for p in scratch.iterdir() if p.name.endswith(".exit")) == \
            [f"{failing}.exit"]
        assert client.min_job_age() > 0
    finally:
        client.cancel(ids)
