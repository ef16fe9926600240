"""Shared and centralized repositories, used by root and by an unprivileged user.

The pytest interpreter lives under /root, out of reach of another user, so the user runs a
world-readable copy of the hpc_exec package with Debian's /usr/bin/python3 (as the run side's
rootless tests do).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from ..conftest import SYSTEM_PYTHON, TEST_USER, copy_package

pytestmark = pytest.mark.requires("root", "squashfs", "system-python")

USER = TEST_USER


@pytest.fixture
def user(site: Any, test_user: Any) -> Any:
    pw = test_user
    copy_package(site.root / "py")
    for path in [site.root, *site.root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(site.temp, 0o1777)
    return pw


def _as(who: str, args: list[str], env: dict[str, str]) -> process.Completed:
    if who == "root":
        argv = ["hpc-exec", *args]
    else:
        argv = ["runuser", "-u", USER, "--", SYSTEM_PYTHON, "-m", "hpc_exec", *args]
    return process.run(argv, env=env, timeout=600, cwd="/", check=False, desc="hpc-exec")


def _env(site: Any, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in site.env.items() if k != "HPC_EXEC_HOME"}
    env.update(HPC_EXEC_CONFIG=str(config), PYTHONPATH=str(site.root / "py"), **extra)
    return env


def _config(site: Any, proxy: Any, testbed: Any, name: str, **keys: str) -> Path:
    path = site.root / f"{name}.yaml"
    lines = [f'insecureRegistries: ["{proxy.address}", "{testbed.registry}"]',
             f'tempDir: "{site.temp}"'] + [f'{k}: "{v}"' for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def test_shared_repository_is_used_by_every_group_member(testbed: Any, proxy: Any, site: Any,
                                                         user: Any, push: Any,
                                                         helpers: Any) -> None:
    shared = site.root / "shared"
    shared.mkdir()
    os.chown(shared, 0, user.pw_gid)
    os.chmod(shared, 0o2775)
    env = _env(site, _config(site, proxy, testbed, "shared", sharedRepositoryDir=str(shared)))
    busybox = f"{proxy.address}/testbed/busybox:latest"
    out = _as("root", ["pull", busybox], env)
    assert out.returncode == 0, out.stderr

    listed = _as(USER, ["images", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert [e["key"] for e in json.loads(listed.stdout)] == [busybox]
    tiny = push([helpers.layer_tar([("hello", b"0", "", b"hi\n")])], "tiny")
    out = _as(USER, ["pull", f"{testbed.registry}/{tiny}"], env)
    assert out.returncode == 0, out.stderr
    out = _as(USER, ["rmi", busybox], env)  # a group member may remove what root pulled
    assert out.returncode == 0 and out.stdout.strip() == f"removed {busybox}", out.stderr
    keys = [e["key"] for e in json.loads(_as("root", ["images", "--json"], env).stdout)]
    assert keys == [f"{testbed.registry}/{tiny}"]
    assert stat.S_IMODE((shared / "metadata.json").stat().st_mode) & 0o060 == 0o060
    assert stat.S_IMODE((shared / "metadata.lock").stat().st_mode) & 0o060 == 0o060
    assert (shared / "images").stat().st_mode & stat.S_ISGID


def test_centralized_repository_is_read_only_for_users(testbed: Any, proxy: Any, site: Any,
                                                       user: Any) -> None:
    central = site.root / "central"
    home = site.root / "userhome"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    env = _env(site, _config(site, proxy, testbed, "central",
                             centralizedRepositoryDir=str(central)),
               HPC_EXEC_HOME=str(home))
    busybox = f"{proxy.address}/testbed/busybox:latest"
    out = _as("root", ["pull", "--centralized-repository", busybox], env)
    assert out.returncode == 0, out.stderr

    listed = _as(USER, ["images", "--centralized-repository"], env)
    assert listed.returncode == 0 and "testbed/busybox" in listed.stdout, listed.stderr
    for args in (["pull", "--centralized-repository", busybox],
                 ["rmi", "--centralized-repository", busybox]):
        out = _as(USER, args, env)
        assert out.returncode == 117, out.stderr
        assert "read-only for you" in out.stderr.splitlines()[0]
    # The run side's lookup falls back to the centralized repository.
    found = process.run(
        ["runuser", "-u", USER, "--", SYSTEM_PYTHON, "-c",
         f"from hpc_exec.engine import lookup; print(lookup({busybox!r}).squashfs)"],
        env=env, timeout=60, cwd="/", check=False, desc="lookup as a user")
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).parent == central / "images"
