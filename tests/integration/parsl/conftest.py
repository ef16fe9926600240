"""Fixtures for the Parsl front end's tests on the live testbed.

* ``parsl_env``: the testbed variables in ``os.environ`` (Parsl's DFK, interchange and
  ``sbatch`` read the process environment), this Python's bin dir first on PATH (Parsl starts
  ``interchange.py`` from PATH; plain worker pools need ``process_worker_pool.py``), a fresh
  pull memo, and the test's own directory as cwd.
* ``slurm_jobs``: a unique executor label per test and a way to list the Slurm jobs of that
  label; after the test, whatever is still queued is cancelled by id and the test fails if the
  code under test left any behind.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpc_exec import process


@pytest.fixture
def parsl_env(testbed: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from hpc_exec.parsl import _check

    for key, value in testbed.env.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(_check, "_pulled", {})
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class SlurmJobs:
    label: str

    def ids(self) -> list[str]:
        """Ids of the queued (any state) jobs whose name Parsl made from our label."""
        out = process.run(["squeue", "--noheader", "--format=%i %j"], timeout=30,
                          desc="listing Slurm jobs").stdout
        prefix = f"parsl.{self.label}."
        return [line.split()[0] for line in out.splitlines()
                if len(line.split()) == 2 and line.split()[1].startswith(prefix)]

    def wait_gone(self, timeout: float = 60.0) -> list[str]:
        """Wait until no job of the label is queued (cancelled jobs linger in CG for up to
        KillWait, 30 s here); return what is still there after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := self.ids()) and time.monotonic() < deadline:
            time.sleep(1)
        return left


@pytest.fixture
def slurm_jobs(parsl_env: Path) -> Iterator[SlurmJobs]:
    jobs = SlurmJobs(f"t{uuid.uuid4().hex[:8]}")
    yield jobs
    left = jobs.ids()
    if left:
        process.run(["scancel", *left], timeout=30, desc="cancelling leftover test jobs",
                    check=False)


def cleanup_dfk(dfk: object) -> None:
    """Clean the DFK up (which scales its blocks in), then close the log file handlers it
    leaves open (parsl.log): an unclosed file is a ResourceWarning, an error here."""
    import logging

    import parsl

    # parsl's unregister callback removes its parsl.log handler without closing it
    handlers = [h for h in logging.getLogger("parsl").handlers
                if isinstance(h, logging.FileHandler)]
    try:
        dfk.cleanup()  # type: ignore[attr-defined]
    finally:
        parsl.clear()
        for handler in handlers:
            logging.getLogger("parsl").removeHandler(handler)
            logging.getLogger("concurrent.futures").removeHandler(handler)
            handler.close()
