"""What already held under Slurm, kept holding (issue 12, "Make it stay fixed"): ``scancel`` of
a multi-rank ``srun … hpc-exec run`` step leaves no process or loop device on any node (its
mounts live and die in the engines' private mount namespaces).

(Moved here from tests/integration/run/test_run_slurm.py, where it ran one rank on one node,
and widened to the reproduced scenario: six ranks on three nodes.)
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hpc_exec import process

from ..conftest import loops_backed_by, pids_with_cmdline, poll
from .conftest import hpc_exec_exe

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "slurm")

SMALL = "testbed/busybox:latest"


def test_scancel_of_a_six_rank_step_leaves_nothing_on_any_node(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    (squashfs,) = (home / "images").glob("*.squashfs")
    name = f"hpcexec-cancel-{uuid.uuid4().hex[:8]}"
    duration = str(3000 + int(uuid.uuid4().int % 600))
    engine_argv = [hpc_exec_exe(), "run", ref, "sleep", duration]
    log = open(fsite.root / f"{name}.log", "wb")  # noqa: SIM115 -- closed in finally
    srun = process.launch(["srun", "-N3", "-n6", "-J", name, *engine_argv], desc="srun",
                          env=fsite.env(home), cwd="/", stdout=log, stderr=log)
    try:
        poll("waiting for six containers",
              lambda: len(pids_with_cmdline(["sleep", duration])) == 6, 90)
        assert loops_backed_by(squashfs)
        process.run(["scancel", "--name", name], timeout=30, env=fsite.env(home),
                    desc="scancel", check=True)
        poll("a container process", lambda: not pids_with_cmdline(["sleep", duration]), 10)
        poll("an engine process", lambda: not pids_with_cmdline(engine_argv), 10)
        poll("a loop device", lambda: not loops_backed_by(squashfs), 10)
        # no mount check: the engines mount in their own private mount namespaces, which no
        # other process can see; the loop devices above are what would outlive them
        assert srun.wait(timeout=60) != 0  # the step was cancelled, not finished
    finally:
        if srun.poll() is None:
            process.terminate(srun.pid, timeout=10)
        log.close()
