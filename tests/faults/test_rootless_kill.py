"""A SIGKILLed rootless ``hpc-exec run`` leaves no process behind (issue 12, item 8), even one
the container moved into a session of its own, where the watchdog's session kill cannot see it
and no cgroup holds it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "fuse", "userfuse", "userns",
                                  "system-python")

SMALL = "testbed/busybox:latest"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _pids(uid: int, *needles: str) -> list[int]:
    """Processes of ``uid`` whose command line is a needle, or contains one that starts with
    '/' or names a program (runc, squashfuse_ll)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
            except OSError:
                continue
            line = _cmdline(int(entry))
            # exact for the sleeps: 'setsid sleep 3331' is not yet in its own session
            if any(line == n if n.startswith("sleep ") else n in line for n in needles):
                out.append(int(entry))
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.fixture
def user_image(fsite: Any) -> Path:
    """The testbed's busybox image as a squashfs file the test user can read."""
    home = fsite.root / "A"
    assert fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=home).returncode == 0
    (sqfs,) = (home / "images").glob("*.squashfs")
    image = fsite.root / "small.sqfs"
    shutil.copyfile(sqfs, image)
    shutil.copyfile(sqfs.with_suffix(".json"), image.with_suffix(".json"))
    for path in (image, image.with_suffix(".json")):
        os.chmod(path, 0o644)
    return image


def test_a_killed_rootless_run_leaves_nothing(fsite: Any, test_user: Any,
                                               user_image: Path) -> None:
    image = user_image
    uid = test_user.pw_uid
    marks = ("sleep 3331", "sleep 3341")
    for _ in range(5):  # whether a leak shows depends on timing: several rounds
        _kill_one_run(fsite, image, uid, marks)


def _kill_one_run(fsite: Any, image: Path, uid: int, marks: tuple[str, ...]) -> None:
    runner = fsite.start("run", str(image), "sh", "-c", "setsid sleep 3331 & sleep 3341",
                         user=True)
    try:
        deadline = time.monotonic() + 60
        while len(_pids(uid, *marks)) < 2:
            assert runner.poll() is None, fsite.finish(runner)[1]
            assert time.monotonic() < deadline, "the container never started both sleeps"
            time.sleep(0.05)
        engines = [p for p in _children(runner.pid) if "hpc_exec" in _cmdline(p)]
        assert len(engines) == 1, [_cmdline(p) for p in _children(runner.pid)]
        os.kill(engines[0], signal.SIGKILL)  # hpc-exec itself (runuser is its parent)
        runner.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _pids(uid, *marks, "runc", "squashfuse_ll") and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: _cmdline(p) for p in _pids(uid, *marks, "runc", "squashfuse_ll")}
        assert left == {}
        # runc's state of the container (on the host since issue 13, item 17) and the marker
        # naming its engine go too: the watchdog removes both (the test user runs nothing else)
        root = Path(f"/tmp/hpc-exec-runc-{uid}")
        while root.is_dir() and any(root.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not root.is_dir() or list(root.iterdir()) == []
    finally:
        for pid in _pids(uid, *marks, "runc", "squashfuse_ll"):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_group_writable_shared_install_still_runs_rootless_as_the_caller(
        fsite: Any, test_user: Any, user_image: Path) -> None:
    """Review finding on issue 12, item 15: a shared environment made under umask 002 (group
    write on the package) must not turn the packaged idmap helper into a security refusal;
    it is as trusted as the engine's code beside it, which runs as the caller anyway."""
    package = fsite.root / "py" / "hpc_exec"
    assert (package / "engine" / "runtime" / "hpc-exec-idmap").is_file()
    for path in (package, package / "engine", package / "engine" / "runtime"):
        os.chmod(path, 0o775)  # group-writable, as umask 002 makes it
    out = fsite.hx("run", str(user_image), "id", "-u", home=fsite.root / "U", user=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(test_user.pw_uid) and "warning" not in out.stderr
