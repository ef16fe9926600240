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


def test_site_config_is_checked_even_with_security_checks_off(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Issue 12, item 9: a user's rootless run refuses another user's config and a writable
    one; root's uses the full check (owner root, no writable directory on the way)."""
    import os

    from hpc_exec.engine.runtime.security import check_site_config

    config = tmp_path / "config.yaml"
    config.write_text("securityChecks: false\n")
    os.chmod(config, 0o644)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    real_stat = os.stat

    def owned_by(uid: int) -> object:
        def fake(path: object, *a: object, **k: object) -> os.stat_result:
            st = real_stat(path, *a, **k)  # type: ignore[arg-type]
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, uid,
                                   st.st_gid, st.st_size, 0, 0, 0))
        return fake

    monkeypatch.setattr(os, "stat", owned_by(4242))
    check_site_config(config)  # the user's own file
    monkeypatch.setattr(os, "stat", owned_by(1000))
    with pytest.raises(SecurityError, match="owned by uid 1000, neither root nor you"):
        check_site_config(config)
    monkeypatch.setattr(os, "stat", owned_by(4242))
    os.chmod(config, 0o666)
    with pytest.raises(SecurityError, match="writable by group or others"):
        check_site_config(config)


def test_the_callers_own_helper_passes_for_the_caller_only(tmp_path: Path) -> None:
    """The rootless idmap helper runs only as the caller: theirs is fine, another user's is
    not, and group-writable is refused whoever owns it (issue 12, item 15)."""
    d = tmp_path / "venv"
    d.mkdir(mode=0o755)
    f = d / "hpc-exec-idmap"
    f.write_text("")
    os.chmod(f, 0o755)
    os.chown(d, 1001, 1001)
    os.chown(f, 1001, 1001)
    check_trusted(f, "the idmap helper", owners=(0, 1001))
    with pytest.raises(SecurityError) as exc:
        check_trusted(f, "the idmap helper", owners=(0, 1002))
    assert f"{f} is not owned by root or you (uid 1001)" in str(exc.value)
    os.chmod(d, 0o775)
    with pytest.raises(SecurityError, match=f"{d} is writable by group or others"):
        check_trusted(f, "the idmap helper", owners=(0, 1001))
