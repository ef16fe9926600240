"""hpc_exec.files.replace_file: the one atomic file writer of the CLI and the testbed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpc_exec.files import replace_file


def test_replaces_with_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    replace_file(target, "new\n", mode=0o600, fsync=True)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        replace_file(target, "bad \udcff\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["hosts"]
