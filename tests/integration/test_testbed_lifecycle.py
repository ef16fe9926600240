"""A throwaway second testbed: up/status/down leave nothing behind; bad input is one line."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hpc_exec.testbed as tb
from hpc_exec import process
from hpc_exec.errors import ExitCode
from hpc_exec.testbed.state import TestbedLayout, TestbedState

from .conftest import hpc_exec_exe

pytestmark = pytest.mark.requires("root", "slurm", "registry")


@pytest.fixture
def scratch(shared_tmp: Path) -> Iterator[Path]:
    state_dir = shared_tmp / "tb"
    try:
        yield state_dir
    finally:
        if state_dir.exists():
            tb.down(state_dir)


def cli(*args: str, check: bool = True) -> process.Completed:
    return process.run([hpc_exec_exe(), *args], timeout=300, desc="hpc-exec", check=check)


def _mounts_under(path: Path) -> list[str]:
    """Mount points under ``path`` in any mount namespace of any process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        found += [ln.split()[4] for ln in text.splitlines()
                  if ln.split()[4].startswith(str(path))]
    return found


def _in_namespaces(namespaces: set[str]) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") in namespaces:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_up_status_down_leaves_no_process_and_no_mount(scratch: Path) -> None:
    cli("testbed", "--state-dir", str(scratch), "up", "--nodes", "2", "--no-images")
    assert cli("testbed", "--state-dir", str(scratch), "status").returncode == 0
    state = TestbedState.load(TestbedLayout(scratch))
    assert state is not None
    procs = list(state.procs)
    assert {p.name for p in procs} == {"munged", "slurmctld", "slurmd-node1", "slurmd-node2",
                                       "registry-plain", "registry-private"}
    namespaces = {os.readlink(f"/proc/{p.pid}/ns/mnt") for p in procs
                  if p.name.startswith("slurmd-")}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/mnt") not in namespaces
    assert _mounts_under(scratch)  # the nodes' private spool binds exist while up

    env = dict(os.environ, SLURM_CONF=str(TestbedLayout(scratch).slurm_conf))
    out = process.run(["srun", "-N2", "-n2", "hostname"], timeout=120, desc="srun", env=env)
    assert sorted(out.stdout.split()) == ["node1", "node2"]
    # A running job step must not survive down.
    job = process.run(["sbatch", "--parsable", "-N2", "--wrap", "srun sleep 300"], timeout=60,
                      desc="sbatch", env=env).stdout.strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = process.run(["squeue", "-h", "-j", job, "-o", "%T"], timeout=30, desc="squeue",
                         env=env).stdout.strip()
        if st == "RUNNING" and _in_namespaces(namespaces) and any(
                _cmd(p) == "sleep" for p in _in_namespaces(namespaces)):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"job {job} did not start its steps")

    cli("testbed", "--state-dir", str(scratch), "down")
    assert [p.name for p in procs if p.alive()] == []
    assert _in_namespaces(namespaces) == []
    assert _mounts_under(scratch) == []
    assert cli("testbed", "--state-dir", str(scratch), "status", check=False).returncode == 1
    cli("testbed", "--state-dir", str(scratch), "down")  # idempotent


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_up_restarts_what_crashed_and_down_cleans_after_a_crash(scratch: Path) -> None:
    tb.up(scratch, nodes=1, images=False)
    state = tb.status(scratch).state
    assert state is not None
    old = {p.name: p for p in state.procs}
    os.kill(old["munged"].pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while old["munged"].alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not tb.status(scratch).healthy
    tb.up(scratch, nodes=1, images=False)
    new = {p.name: p for p in tb.status(scratch).state.procs}  # type: ignore[union-attr]
    assert new["munged"].pid != old["munged"].pid
    assert new["slurmctld"].pid == old["slurmctld"].pid  # untouched: still running
    assert tb.status(scratch).healthy
    os.kill(new["slurmctld"].pid, signal.SIGKILL)  # a crash; down must still clean up
    tb.down(scratch)
    assert [p.name for p in new.values() if p.alive()] == []


def test_port_in_use_is_a_one_line_error_and_starts_nothing(scratch: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = cli("testbed", "--state-dir", str(scratch), "up", "--no-images",
                  "--registry-port", str(port), check=False)
    assert out.returncode == ExitCode.INVALID_INPUT
    assert out.stderr.splitlines()[0] == (
        f"hpc-exec: error: registry-plain port {port} on 127.0.0.1 is already in use")
    assert "Traceback" not in out.stderr
    state = TestbedState.load(TestbedLayout(scratch))
    assert state is None or not any(p.alive() for p in state.procs)


def test_unwritable_state_dir_is_a_one_line_error(shared_tmp: Path) -> None:
    blocker = shared_tmp / "not-a-dir"
    blocker.write_text("")
    out = cli("testbed", "--state-dir", str(blocker / "tb"), "up", check=False)
    assert out.returncode == ExitCode.INVALID_INPUT
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"hpc-exec: error: testbed state directory {blocker}/tb is not "
                               "writable")
    assert "Traceback" not in out.stderr


def test_remembered_port_taken_meanwhile_is_repicked(scratch: Path) -> None:
    tb.up(scratch, nodes=1, images=False)
    tb.down(scratch)
    old = tb.status(scratch).state.ports["registry-plain"]  # type: ignore[union-attr]
    with socket.socket() as s:
        s.bind(("127.0.0.1", old))
        s.listen()
        tb.up(scratch, nodes=1, images=False)
    assert tb.status(scratch).healthy
    assert tb.status(scratch).state.ports["registry-plain"] != old  # type: ignore[union-attr]


def test_missing_binary_names_its_debian_package(scratch: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_exec import process
    from hpc_exec.errors import MissingDependency

    real_which = process.which

    def which(program: str, path: str | None = None) -> str | None:
        return None if program == "munged" else real_which(program, path)

    monkeypatch.setattr(process, "which", which)
    with pytest.raises(MissingDependency, match=r"required program 'munged' not found "
                                                r"\(Debian package 'munge'\)"):
        tb.up(scratch, nodes=1, images=False)
    assert not any(p.alive() for p in tb.status(scratch).state.procs)  # type: ignore[union-attr]
