"""Helpers for integration tests: the installed ``hpc-exec`` console script, scratch dirs."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc_exec import process

# The unprivileged user of the rootless and shared-repository tests. Created with useradd on
# first use (the one change to /etc the test suite makes; the testbed itself makes none).
TEST_USER = "hpcexec-test"
SYSTEM_PYTHON = "/usr/bin/python3"


def hpc_exec_exe() -> str:
    """The ``hpc-exec`` script of the environment running the tests (not a source checkout)."""
    beside = Path(sys.executable).parent / "hpc-exec"
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch dir every user and every testbed node can reach (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="hpc-exec-test-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """The unprivileged test user (tests using it should require "root" and "system-python")."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        process.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                    timeout=30, desc="creating the test user")
        return pwd.getpwnam(TEST_USER)


def idmap_helper(dest: Path) -> Path:
    """The rootless idmap helper the package build compiled into the installed package (the
    engine's own lookup), else one built now into ``dest``."""
    from hpc_exec.engine.runtime.run import IDMAP_HELPER, find_idmap_helper

    from hpc_exec.config import Settings

    packaged = find_idmap_helper(Settings())
    if packaged is not None and Path(packaged).name == IDMAP_HELPER:
        return Path(packaged)
    source = Path(__file__).resolve().parents[2] / "engine" / "runtime" / "idmap.c"
    out = dest / "hpc-exec-idmap"
    process.run(["cc", "-static", "-Os", "-s", "-o", str(out), str(source)], timeout=120,
                desc="building the idmap helper")
    os.chmod(out, 0o755)
    return out


def copy_package(dest: Path) -> Path:
    """Copy the installed hpc_exec package under ``dest`` (for PYTHONPATH), so that the test
    user can run it with SYSTEM_PYTHON even when the test interpreter is not readable to it."""
    import hpc_exec.engine

    import hpc_exec

    target = dest / "hpc_exec"
    shutil.copytree(Path(hpc_exec.__file__).parent, target, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if not (target / "engine").exists():  # editable installs keep engine/ elsewhere
        shutil.copytree(Path(hpc_exec.engine.__file__).parent, target / "engine",
                        symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
