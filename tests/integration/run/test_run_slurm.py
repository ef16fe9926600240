"""hpc-exec run under Slurm and when killed: one container per task on its node, and nothing
left behind (process, mount, loop device) after SIGKILL of the engine. (scancel of a step:
tests/faults/test_slurm_faults.py, six ranks on three nodes.)"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from ...conftest import loops_backed_by, pids_with_cmdline, poll

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "slurm")

RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)


def _exe(run_site: RunSite) -> str:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "hpc-exec"
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


def test_each_task_runs_in_its_own_container_on_its_node(run_site: RunSite) -> None:
    script = ("echo $SLURM_PROCID > /tmp/mark-$SLURM_PROCID; sleep 2; "
              "echo $SLURMD_NODENAME $(hostname) $SLURM_PROCID "
              "$(readlink /proc/self/ns/mnt) $(ls /tmp)")
    out = process.run(["srun", "-N3", "-n6", _exe(run_site), "run", run_site.small,
                       "sh", "-c", script], timeout=180, env=run_site.env, desc="srun",
                      check=True)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    assert len(rows) == 6, out.stdout
    assert sorted(r[2] for r in rows) == [str(i) for i in range(6)]
    for node, hostname, rank, _ns, *tmp in rows:
        assert hostname == node  # the container shares its node's UTS namespace
        assert tmp == [f"mark-{rank}"]  # its own rootfs: no other task's file
    assert len({r[3] for r in rows}) == 6  # six live mount namespaces at once
    assert {r[0] for r in rows} == {"node1", "node2", "node3"}  # -N3: all nodes used


def test_sigkill_of_the_engine_leaves_nothing_behind(run_site: RunSite) -> None:
    duration = str(4000 + int(uuid.uuid4().int % 600))
    log = run_site.root / f"sigkill-{duration}.log"
    engine = process.spawn([_exe(run_site), "run", run_site.small, "sh", "-c",
                            f"sleep {duration} & sleep {duration}"],
                           desc="hpc-exec run", log_path=log, env=run_site.env)
    squashfs = run_site.squashfs_of(run_site.small)
    try:
        poll("waiting for the container",
              lambda: len(pids_with_cmdline(["sleep", duration])) == 2, 60)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(timeout=10)
        poll("a container process", lambda: not pids_with_cmdline(["sleep", duration]), 5)
        poll("a loop device", lambda: not loops_backed_by(squashfs), 5)
    finally:
        process.terminate(engine.pid, timeout=5)


def test_sigterm_is_forwarded(run_site: RunSite) -> None:
    duration = str(5000 + int(uuid.uuid4().int % 600))
    log = run_site.root / f"sigterm-{duration}.log"
    engine = process.spawn([_exe(run_site), "run", run_site.small, "sh", "-c",
                            f"trap 'echo got-term; exit 7' TERM; sleep {duration} & wait"],
                           desc="hpc-exec run", log_path=log, env=run_site.env)
    try:
        poll("waiting for the container", lambda: pids_with_cmdline(["sleep", duration]),
              60)
        os.kill(engine.pid, signal.SIGTERM)
        assert engine.wait(timeout=10) == 7
        assert "got-term" in log.read_text()
    finally:
        process.terminate(engine.pid, timeout=5)
        for pid in pids_with_cmdline(["sleep", duration]):  # the trap left its child
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_reaches_the_container_once(run_site: RunSite) -> None:
    # A terminal's Ctrl-C is SIGINT to the whole foreground process group: the engine's
    # (process.spawn puts it at the head of its own). runc must not get it twice, from the
    # terminal and from the engine's forwarding, or the container counts two interrupts.
    duration = str(7000 + int(uuid.uuid4().int % 600))
    log = run_site.root / f"sigint-{duration}.log"
    script = (f"n=0; trap 'n=$((n+1)); echo got-int-$n' INT; sleep {duration} & wait; "
              "sleep 2 & wait $!; exit $((40 + n))")
    engine = process.spawn([_exe(run_site), "run", run_site.small, "sh", "-c", script],
                           desc="hpc-exec run", log_path=log, env=run_site.env)
    try:
        poll("waiting for the container", lambda: pids_with_cmdline(["sleep", duration]),
              60)
        os.killpg(engine.pid, signal.SIGINT)
        assert engine.wait(timeout=20) == 41, log.read_text()
        assert log.read_text().count("got-int") == 1
    finally:
        process.terminate(engine.pid, timeout=5)
        for pid in pids_with_cmdline(["sleep", duration]):
            os.kill(pid, signal.SIGKILL)


def test_background_leftovers_do_not_hold_the_run(run_site: RunSite) -> None:
    duration = str(6000 + int(uuid.uuid4().int % 600))
    out = run_site.run("run", run_site.small, "sh", "-c", f"sleep {duration} & echo started",
                       timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "started"
    poll("a leftover process", lambda: not pids_with_cmdline(["sleep", duration]), 5)
