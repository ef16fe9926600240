"""hpc-exec run as an unprivileged user (rootless): squashfuse_ll, overlay and runc inside a
user namespace, no setuid helper.

The pytest interpreter lives under /root (mode 0700), out of reach of another user, so the
fixture copies the installed hpc_exec package into a world-readable directory and runs it with
Debian's /usr/bin/python3 as the user ``hpcexec-test`` (created if missing).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from ..conftest import SYSTEM_PYTHON, TEST_USER, copy_package

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "fuse", "userfuse", "userns",
                                  "system-python")

USER = TEST_USER
RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)


@dataclass
class Rootless:
    root: Path
    image: Path  # a squashfs file (with its metadata beside it)
    uid: int
    gid: int
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> process.Completed:
        return process.run(["runuser", "-u", USER, "--", SYSTEM_PYTHON, "-m", "hpc_exec",
                            "run", *args], timeout=timeout, env=self.env, cwd=self.root,
                           check=False, desc="hpc-exec run (rootless)")


@pytest.fixture(scope="module")
def rootless(run_site: RunSite, test_user: pwd.struct_passwd) -> Iterator[Rootless]:
    pw = test_user
    root = run_site.root / "rootless"
    root.mkdir(mode=0o755)
    copy_package(root / "py")
    squashfs = run_site.squashfs_of(run_site.small)
    image = root / "small.sqfs"
    shutil.copyfile(squashfs, image)
    meta = json.loads(squashfs.with_suffix(".json").read_text()) \
        if squashfs.with_suffix(".json").exists() else {}
    (root / "small.json").write_text(json.dumps(meta or {"cmd": ["/bin/sh"]}))
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    data = root / "data"
    data.mkdir()
    os.chown(data, pw.pw_uid, pw.pw_gid)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "PYTHONPATH": str(root / "py"), "HPC_EXEC_CONFIG": str(run_site.config),
           "LANG": "C.UTF-8"}
    yield Rootless(root, image, pw.pw_uid, pw.pw_gid, env)


def test_rootless_image_and_identity(rootless: Rootless) -> None:
    out = rootless.run(str(rootless.image), "sh", "-c",
                       "cat /etc/os-release; id -u; grep Cap /proc/self/status")
    assert out.returncode == 0, out.stderr
    assert "ID=busybox" in out.stdout
    lines = out.stdout.splitlines()
    # runc must be uid 0 in any user namespace it enters, and an unprivileged user can map
    # only one id: the caller is uid 0 inside, with no capabilities (docs/run.md).
    assert "0" in lines
    assert all(line.split()[1] == "0000000000000000" for line in lines if line.startswith("Cap")
               and not line.startswith("CapBnd"))


def test_rootless_files_belong_to_the_caller(rootless: Rootless) -> None:
    data = rootless.root / "data"
    out = rootless.run("--mount", f"type=bind,src={data},dst=/data", str(rootless.image),
                       "touch", "/data/made-inside")
    assert out.returncode == 0, out.stderr
    st = os.stat(data / "made-inside")
    assert (st.st_uid, st.st_gid) == (rootless.uid, rootless.gid)


def test_rootless_readonly_mount(rootless: Rootless) -> None:
    data = rootless.root / "data"
    out = rootless.run("--mount", f"type=bind,src={data},dst=/data,readonly",
                       str(rootless.image), "sh", "-c",
                       "touch /data/nope && echo WROTE || echo REFUSED")
    assert "REFUSED" in out.stdout and not (data / "nope").exists()


@pytest.mark.parametrize("status", [0, 1, 137])
def test_rootless_exit_status(rootless: Rootless, status: int) -> None:
    script = "kill -9 $$" if status == 137 else f"exit {status}"
    assert rootless.run(str(rootless.image), "sh", "-c", script).returncode == status


def test_rootless_engine_error_and_forbidden_destination(rootless: Rootless) -> None:
    out = rootless.run("--mount", "type=bind,src=/tmp,dst=/etc/x", str(rootless.image), "true")
    assert out.returncode == 122
    assert "destination cannot be a subdirectory of '/etc'" in out.stderr
    out = rootless.run(str(rootless.image), "/no/such/program")
    assert out.returncode == 121 and "runc failed" in out.stderr


def test_rootless_env_entrypoint_workdir_init(rootless: Rootless) -> None:
    out = rootless.run("-e", "A=1", "-w", "/made/here", "--entrypoint", "/bin/sh",
                       str(rootless.image), "-c", "echo $A; pwd")
    assert out.stdout.split() == ["1", "/made/here"], out.stderr
    out = rootless.run("--init", "--pid=private", str(rootless.image), "sh", "-c",
                       "tr '\\0' ' ' < /proc/1/cmdline")
    assert out.stdout.startswith("/dev/init -- sh"), out.stderr


def test_rootless_background_leftovers_are_killed(rootless: Rootless) -> None:
    # Without a cgroup runc cannot kill what the first process left behind, and would wait
    # for it forever; the engine kills the container's session once its first process exits.
    out = rootless.run(str(rootless.image), "sh", "-c", "sleep 3703 & echo started",
                       timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "started", out.stderr
