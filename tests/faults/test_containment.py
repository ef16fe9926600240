"""Containment: mount destinations through symlinks, '/' as a destination, an unchecked site
config (issue 12, items 6, 7, 9)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

pytestmark = pytest.mark.requires("root", "runc", "squashfs")

ROOTLESS = ("fuse", "userfuse", "userns", "system-python")


@pytest.fixture(scope="module")
def python_image(testbed: Any, hpc_exec_exe: str) -> Iterator[Path]:
    """The testbed's Debian python image as a world-readable squashfs file (+ its JSON)."""
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-fault-img-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    config = root / "config.yaml"
    config.write_text(f'insecureRegistries: ["{testbed.registry}"]\n')
    env = testbed.environ(HPC_EXEC_CONFIG=str(config), HPC_EXEC_HOME=str(root / "home"))
    try:
        process.run([hpc_exec_exe, "pull", testbed.image_python], env=env, timeout=600,
                    cwd="/", desc="pulling the python image")
        (sqfs,) = (root / "home" / "images").glob("*.squashfs")
        shutil.copyfile(sqfs, root / "python.sqfs")
        shutil.copyfile(sqfs.with_suffix(".json"), root / "python.json")
        for path in (root / "python.sqfs", root / "python.json"):
            os.chmod(path, 0o644)
        yield root / "python.sqfs"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(fsite: Any, image: Path, *args: str, user: bool = False) -> process.Completed:
    return fsite.hx("run", *args[:-1], str(image), "sh", "-c", args[-1], user=user,
                    timeout=180)


def _world_readable(*paths: Path) -> None:
    for path in paths:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


# -- item 6 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", [False, pytest.param(True, marks=pytest.mark.requires(*ROOTLESS))],
                         ids=["root", "rootless"])
def test_a_symlink_in_the_image_does_not_carry_a_mount_into_etc(
        fsite: Any, python_image: Path, request: pytest.FixtureRequest, user: bool) -> None:
    if user:
        request.getfixturevalue("test_user")
    evil = fsite.root / "evil.py"
    evil.write_text("print('PWNED')\n")
    _world_readable(evil)
    out = _run(fsite, python_image, "--mount",
               f"type=bind,src={evil},dst=/usr/lib/python3.11/sitecustomize.py",
               "python3 -c pass", user=user)
    assert "PWNED" not in out.stdout
    assert out.returncode == 122, out.stderr
    assert "resolves to '/etc/python3.11/sitecustomize.py'" in out.stderr
    errors = [line for line in out.stderr.splitlines() if "warning:" not in line]
    assert len(errors) == 1, out.stderr


@pytest.mark.parametrize("user", [False, pytest.param(True, marks=pytest.mark.requires(*ROOTLESS))],
                         ids=["root", "rootless"])
def test_a_symlink_in_a_mounted_directory_does_not_carry_a_mount_into_etc(
        fsite: Any, python_image: Path, request: pytest.FixtureRequest, user: bool) -> None:
    if user:
        request.getfixturevalue("test_user")
    data = fsite.root / "data"
    data.mkdir()
    (data / "l").symlink_to("/etc")
    profile = fsite.root / "profile"
    profile.write_text("echo PWNED\n")
    _world_readable(data, profile)
    out = _run(fsite, python_image, "--mount", f"type=bind,src={data},dst=/data",
               "--mount", f"type=bind,src={profile},dst=/data/l/profile", "cat /etc/profile",
               user=user)
    assert "PWNED" not in out.stdout
    assert out.returncode == 122, out.stderr
    assert "resolves to '/etc/profile'" in out.stderr


def test_symlinks_that_stay_allowed_still_work(fsite: Any, python_image: Path) -> None:
    """A link inside an allowed tree is followed and the mount lands where runc puts it."""
    data = fsite.root / "data"
    (data / "real").mkdir(parents=True)
    (data / "l").symlink_to("real")
    (data / "up").symlink_to("../../../../../data/real")  # '..' stops at the root
    note = fsite.root / "note"
    note.write_text("hello\n")
    _world_readable(data, data / "real", note)
    out = _run(fsite, python_image, "--mount", f"type=bind,src={data},dst=/data",
               "--mount", f"type=bind,src={note},dst=/data/up/n",
               "cat /data/real/n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\n"


# -- item 7 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dst", ["/", "//", "/dev", "/proc/self", "/etc/hosts"])
def test_the_root_and_the_runtimes_own_paths_are_refused(fsite: Any, python_image: Path,
                                                         dst: str) -> None:
    src = fsite.root / "src"
    src.mkdir()
    config = fsite.write_config(fsite.config.read_text() +
                                "userMounts: {notAllowedPrefixesOfPath: [], "
                                "notAllowedPaths: []}\n", "open.yaml")
    out = fsite.hx("run", "--mount", f"type=bind,src={src},dst={dst}", str(python_image),
                   "true", config=config, timeout=120)
    assert out.returncode == 122, out.stderr
    assert "the runtime owns" in out.stderr
    assert list(src.iterdir()) == []


# -- item 9 --------------------------------------------------------------------------------------

def test_a_config_that_turns_security_checks_off_is_itself_checked(fsite: Any,
                                                                   python_image: Path,
                                                                   test_user: Any) -> None:
    config = fsite.write_config(fsite.config.read_text() + "securityChecks: false\n",
                                "hostile.yaml")
    os.chown(config, test_user.pw_uid, test_user.pw_gid)
    os.chmod(config, 0o666)
    out = fsite.hx("run", str(python_image), "true", config=config, timeout=120)
    assert out.returncode == 122, out.stderr
    assert str(config) in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    os.chown(config, 0, 0)  # the same file, root's and not writable by others: accepted
    os.chmod(config, 0o644)
    out = fsite.hx("run", str(python_image), "true", config=config, timeout=120)
    assert out.returncode == 0, out.stderr
