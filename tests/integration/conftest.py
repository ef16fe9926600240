"""Helpers for integration tests: the installed ``hpc-exec`` console script, scratch dirs."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
