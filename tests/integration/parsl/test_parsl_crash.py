"""A workflow script that crashes before ``dfk.cleanup()`` leaves no Slurm job behind
(FastSlurmProvider cancels its active blocks when the Python process exits)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

pytestmark = pytest.mark.requires("root", "slurm", "registry", "runc")

SCRIPT = '''
import sys, time
import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher
from hpc_exec.parsl import ContainerLauncher, FastSlurmProvider

label, image = sys.argv[1], sys.argv[2]
dfk = parsl.load(Config(executors=[HighThroughputExecutor(
    label=label, address="127.0.0.1", provider=FastSlurmProvider(
        partition="debug", init_blocks=1, max_blocks=1, walltime="00:05:00", exclusive=False,
        launcher=ContainerLauncher(image, inner=SingleNodeLauncher()), status_interval=1))],
    strategy_period=0.5, run_dir="runinfo"))
deadline = time.monotonic() + 180
while not dfk.executors[label].connected_managers():
    assert time.monotonic() < deadline, "the block did not start"
    time.sleep(0.5)
print("block running", flush=True)
raise RuntimeError("the workflow crashed")  # no cleanup
'''


def test_crashed_script_leaves_no_job(testbed: Any, parsl_env: Path, slurm_jobs: Any) -> None:
    """Parsl's non-daemon threads keep a crashed script alive (Parsl's behaviour, not ours);
    its blocks must be cancelled anyway, at once. The script is stopped afterwards."""
    script, log = parsl_env / "crash.py", parsl_env / "crash.log"
    script.write_text(SCRIPT)
    proc = process.spawn([sys.executable, str(script), slurm_jobs.label, testbed.image_parsl],
                         desc="a crashing Parsl script", log_path=log, cwd=parsl_env)
    try:
        deadline = time.monotonic() + 240
        while "the workflow crashed" not in _text(log):
            assert proc.poll() is None or "the workflow crashed" in _text(log), _text(log)
            assert time.monotonic() < deadline, _text(log)
            time.sleep(0.5)
        assert "block running" in _text(log)
        left = slurm_jobs.wait_gone(timeout=60)
    finally:
        # spawn() gave it its own session: this stops the script and its interchange
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert left == [], _text(log)
    assert "left by this Parsl run" in _text(log)  # our exit hook did it, not Parsl


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
