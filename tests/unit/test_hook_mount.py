"""hooks/_mount.py, hooks/_ldcache.py and hooks/mount.py: parsing, rootfs paths, wildcard."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hpc_exec.hooks import _ldcache, mount
from hpc_exec.hooks._mount import (
    DeviceSpec,
    MountSpec,
    parse_args,
    parse_device,
    parse_mount,
    resolve_in_rootfs,
)
from hpc_exec.hooks._state import Container, HookError, State


@pytest.mark.parametrize("spec, expected", [
    ("type=bind,source=/a,destination=/b", MountSpec("/a", "/b")),
    ("type=bind,src=/a/,dst=/b//c,readonly", MountSpec("/a", "/b/c", True)),
    ("type=bind,src=/a,target=/b,ro=true", MountSpec("/a", "/b", True)),
    ("type=bind,src=/a,dst=/b,readonly=false", MountSpec("/a", "/b")),
    (" type=bind , src=/a , dst=/b ", MountSpec("/a", "/b")),
])
def test_parse_mount(spec: str, expected: MountSpec) -> None:
    assert parse_mount(spec) == expected


@pytest.mark.parametrize("spec, words", [
    ("src=/a,dst=/b", "needs type=bind"),
    ("type=volume,src=/a,dst=/b", "needs type=bind"),
    ("type=bind,dst=/b", "lacks a source"),
    ("type=bind,src=/a", "lacks a destination"),
    ("type=bind,src=a,dst=/b", "mount source must be an absolute path"),
    ("type=bind,src=/a,dst=b", "mount destination must be an absolute path"),
    ("type=bind,src=/a,dst=/b,colour=red", "unknown mount option 'colour'"),
    ("type=bind,src=/a,src=/c,dst=/b", "given twice"),
    ("type=bind,src=/a,dst=/b,readonly=maybe", "invalid value 'maybe' for readonly"),
    ("type=bind,src=/a,dst=/b,bind-propagation=rslave", "unknown mount option 'bind-propagation'"),
    ("type=bind,src=/a,dst=/b,junk", "invalid mount option 'junk'"),
])
def test_parse_mount_errors(spec: str, words: str) -> None:
    with pytest.raises(HookError, match=words):
        parse_mount(spec)


@pytest.mark.parametrize("spec, expected", [
    ("/dev/fuse", DeviceSpec("/dev/fuse", "/dev/fuse", "rwm")),
    ("/dev/fuse:r", DeviceSpec("/dev/fuse", "/dev/fuse", "r")),
    ("/dev/fuse:/dev/f", DeviceSpec("/dev/fuse", "/dev/f", "rwm")),
    ("/dev/fuse:/dev/f:mw", DeviceSpec("/dev/fuse", "/dev/f", "wm")),
])
def test_parse_device(spec: str, expected: DeviceSpec) -> None:
    assert parse_device(spec) == expected


@pytest.mark.parametrize("spec, words", [
    ("", "invalid device"), ("/a:/b:r:x", "invalid device"), ("/a:rr", "invalid device access"),
    ("/a:rx", "invalid device access"), ("dev/a", "device path must be an absolute path"),
    ("/a:/b/c:", "invalid device access"),
])
def test_parse_device_errors(spec: str, words: str) -> None:
    with pytest.raises(HookError, match=words):
        parse_device(spec)


def test_parse_args() -> None:
    assert parse_args(["--mount=type=bind,src=/a,dst=/b", "--device", "/dev/x", "--mount", "m"]
                      ) == (["type=bind,src=/a,dst=/b", "m"], ["/dev/x"])
    with pytest.raises(HookError, match="unknown argument '--volume=x'"):
        parse_args(["--volume=x"])
    with pytest.raises(HookError, match="--device needs a value"):
        parse_args(["--device"])


def test_resolve_in_rootfs_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "escape").symlink_to("/etc")
    (root / "up").symlink_to("../../../..")
    (root / "usr/lib/loop").symlink_to("loop")
    r = str(root)
    assert resolve_in_rootfs(r, "/lib/x.so") == f"{r}/usr/lib/x.so"
    assert resolve_in_rootfs(r, "/escape/passwd") == f"{r}/etc/passwd"
    assert resolve_in_rootfs(r, "/up/etc") == f"{r}/etc"
    assert resolve_in_rootfs(r, "/../../a/./b/") == f"{r}/a/b"
    assert resolve_in_rootfs(r, "/lib", follow_last=False) == f"{r}/lib"
    with pytest.raises(HookError, match="too many levels of symbolic links"):
        resolve_in_rootfs(r, "/lib/loop/x")


def test_ldcache_parse() -> None:
    entries = [("libfabric.so.1", "/usr/lib64/libfabric.so.1"), ("libc.so.6", "/lib/libc.so.6")]
    assert _ldcache.parse(_ldcache.build(entries, 0x0303), flags=0x0303) == entries
    assert _ldcache.parse(_ldcache.build(entries, 0x0303, old=True), flags=0x0303) == entries
    assert _ldcache.parse(_ldcache.build(entries, 0x0003), flags=0x0303) == []
    assert _ldcache.find(entries, "libfabric.so") == entries[:1]
    with pytest.raises(ValueError):
        _ldcache.parse(b"garbage" * 10)


def container(tmp_path: Path, env: dict[str, str]) -> Container:
    state = State("1.0.2", "c", "creating", 1, str(tmp_path), {})
    return Container(state, {"root": {"path": "rootfs"},
                             "process": {"env": [f"{k}={v}" for k, v in env.items()]}})


def test_fi_provider_path_order(tmp_path: Path) -> None:
    (tmp_path / "rootfs/etc").mkdir(parents=True)
    assert mount.fi_provider_path(container(tmp_path, {})) == "/usr/lib"
    (tmp_path / "rootfs/etc/ld.so.cache").write_bytes(_ldcache.build(
        [("libfabric.so.1", "/opt/ofi/lib64/libfabric.so.1")]))
    assert mount.fi_provider_path(container(tmp_path, {})) == "/opt/ofi/lib64/libfabric"
    assert mount.fi_provider_path(container(tmp_path, {"FI_PROVIDER_PATH": "/p"})) == "/p"


def test_no_arguments_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"env": []}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"bundle": str(tmp_path)})))
    monkeypatch.setattr("sys.argv", ["hpc-hook-mount"])
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    assert mount.main() == 0
    assert "no --mount or --device arguments" in capsys.readouterr().err


def test_invalid_argument_fails_before_mounting(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"env": []}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"bundle": str(tmp_path)})))
    monkeypatch.setattr("sys.argv", ["hpc-hook-mount", f"--mount=type=bind,src={os.sep}a,dst=/b",
                                     "--device=/dev/null:q"])
    assert mount.main() == 1
    assert "invalid device access 'q'" in capsys.readouterr().err
    assert not (tmp_path / "rootfs").exists()
