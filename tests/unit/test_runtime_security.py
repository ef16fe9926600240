"""Security checks: root-owned, not group/other-writable, up the whole path; messages name
the offending file or directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc_exec.engine.runtime.security import check_all, check_trusted
from hpc_exec.errors import SecurityError

pytestmark = pytest.mark.requires("root")


def test_trusted_file_passes(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text("{}")
    os.chmod(f, 0o644)
    check_trusted(f, "the site config")
    check_all([(f, "the site config"), (f, "again")])


def test_writable_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "hook.json"
    f.write_text("{}")
    os.chmod(f, 0o664)
    with pytest.raises(SecurityError) as exc:
        check_trusted(f, "hook file")
    assert f"security check on hook file: {f} is writable by group or others (mode 664)" \
        in str(exc.value)


def test_writable_parent_directory_is_named(tmp_path: Path) -> None:
    d = tmp_path / "hooks.d"
    d.mkdir()
    f = d / "hook.json"
    f.write_text("{}")
    os.chmod(f, 0o644)
    os.chmod(d, 0o777)
    with pytest.raises(SecurityError) as exc:
        check_trusted(f, "hook file")
    assert f"{d} is writable by group or others" in str(exc.value)
    os.chmod(d, 0o1777)  # sticky, root-owned: like /tmp, accepted
    check_trusted(f, "hook file")


def test_not_root_owned_is_named(tmp_path: Path) -> None:
    f = tmp_path / "runc"
    f.write_text("")
    os.chmod(f, 0o755)
    os.chown(f, 1, 1)
    with pytest.raises(SecurityError) as exc:
        check_trusted(f, "runc")
    assert f"{f} is not owned by root (uid 1)" in str(exc.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="cannot stat"):
        check_trusted(tmp_path / "nope", "the init binary")
