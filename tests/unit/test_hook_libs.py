"""hooks/_libs.py, hooks/mpi.py and hooks/glibc.py: ABI rules, versions, sonames, no-op paths."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hpc_exec.hooks import _ldcache, glibc, mpi
from hpc_exec.hooks._libs import (
    check_abi,
    elf_soname,
    glibc_version,
    linker_name,
    split_paths,
    version_of,
)
from hpc_exec.hooks._state import Container, HookError, Log, State

HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.mark.parametrize("host, container, mode", [
    ((12, 1, 8), (12, 1, 0), "full"),
    ((12, 2), (12, 1, 9), "full"),
    ((12,), (12,), "full"),  # missing numbers count as 0
    ((12, 3), (12, 9), "major"),
    ((12, 1, 8), (12, 1, 0), "strict"),
    ((12,), (12, 0, 5), "strict"),
])
def test_abi_compatible(host: tuple[int, ...], container: tuple[int, ...], mode: str) -> None:
    assert check_abi(host, container, mode) is None


def test_abi_lower_host_minor_warns_but_proceeds() -> None:
    warning = check_abi((12, 0), (12, 1, 3), "full")
    assert warning is not None and "host 12.0 vs container 12.1.3" in warning
    assert check_abi((12,), (12, 1), "full") is not None  # missing minor is 0 < 1


@pytest.mark.parametrize("host, container, mode, words", [
    ((12, 1), (40, 1), "full", "major versions differ (host 12.1 vs container 40.1)"),
    ((12, 1), (), "major", "major versions differ"),  # no numbers at all: major 0
    ((12, 2), (12, 1), "strict", "minor versions differ and MPI_COMPATIBILITY_TYPE=strict"),
])
def test_abi_incompatible(host: tuple[int, ...], container: tuple[int, ...], mode: str,
                          words: str) -> None:
    with pytest.raises(HookError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_abi(host, container, mode)


@pytest.mark.parametrize("name, version, linker", [
    ("libmpich.so.12.3.0", (12, 3, 0), "libmpich.so"),
    ("/usr/lib/libmpi.so.12", (12,), "libmpi.so"),
    ("libmpi.so", (), "libmpi.so"),
    ("libfoo.so.1.2rc", (1,), "libfoo.so"),
    ("ld-linux-x86-64.so.2", (2,), "ld-linux-x86-64.so"),
])
def test_version_and_linker_name(name: str, version: tuple[int, ...], linker: str) -> None:
    assert version_of(name) == version
    assert linker_name(name) == linker


@pytest.mark.skipif(not os.path.exists(HOST_LIBC), reason="not an x86-64 Debian host")
def test_elf_soname_and_glibc_version_of_real_files(tmp_path: Path) -> None:
    assert elf_soname(HOST_LIBC) == "libc.so.6"
    assert elf_soname("/lib/x86_64-linux-gnu/libz.so.1") == "libz.so.1"
    assert glibc_version(HOST_LIBC) >= (2, 28)
    text = tmp_path / "text"
    text.write_text("not elf")
    assert elf_soname(str(text)) is None
    with pytest.raises(HookError, match="does not look like a GNU C library"):
        glibc_version(str(text))


def test_glibc_version_of_a_fake_libc(tmp_path: Path) -> None:
    fake = tmp_path / "libc.so.6"
    fake.write_bytes(b"\0junk GNU C Library stable release version 2.28.\n\0")
    assert glibc_version(str(fake)) == (2, 28)


def test_split_paths() -> None:
    assert split_paths("/a::/b:", "X") == ["/a", "/b"]
    with pytest.raises(HookError, match="X: 'rel' is not an absolute path"):
        split_paths("/a:rel", "X")


def run_hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: object,
             annotations: dict[str, str], hook_env: dict[str, str]) -> int:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"env": []}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(
        {"bundle": str(tmp_path), "pid": 1, "annotations": annotations})))
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    for key in ("MPI_LIBS", "MPI_TYPE", "GLIBC_LIBS", "LDCONFIG_PATH", "MPI_COMPATIBILITY_TYPE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in hook_env.items():
        monkeypatch.setenv(key, value)
    return module.main()  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("annotations, hook_env, words", [
    ({}, {}, "com.hooks.mpi.enabled is not 'true'"),
    ({"com.hooks.mpi.enabled": "false"}, {}, "com.hooks.mpi.enabled is not 'true'"),
    ({"com.hooks.mpi.enabled": "true", "com.hooks.mpi.type": "openmpi"}, {"MPI_TYPE": "mpich"},
     "MPI type 'openmpi' requested; this hook provides 'mpich'"),
])
def test_mpi_not_applicable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str], annotations: dict[str, str],
                            hook_env: dict[str, str], words: str) -> None:
    assert run_hook(monkeypatch, tmp_path, mpi, annotations, hook_env) == 0
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("hook_env, words", [
    ({}, "MPI_LIBS is not set"),
    ({"MPI_LIBS": "/x/libmpi.so.12", "MPI_COMPATIBILITY_TYPE": "loose"},
     "MPI_COMPATIBILITY_TYPE='loose' is not one of major, full, strict"),
])
def test_mpi_misconfigured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str], hook_env: dict[str, str],
                           words: str) -> None:
    assert run_hook(monkeypatch, tmp_path, mpi, {"com.hooks.mpi.enabled": "true"}, hook_env) == 1
    assert words in capsys.readouterr().err


def fake_rootfs(tmp_path: Path, libs: dict[str, str]) -> Container:
    """A rootfs whose ld.so.cache maps sonames to fake library files (container paths)."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    for path in libs.values():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text("fake")
    (root / "etc/ld.so.cache").write_bytes(_ldcache.build(list(libs.items())))
    return Container(State("1.0.2", "c", "creating", 1, str(tmp_path), {}),
                     {"root": {"path": "rootfs"}})


def test_mpi_plan(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "libmpich.so.12.2.2").write_text("host")
    (host / "libmpich.so.12").symlink_to("libmpich.so.12.2.2")
    (host / "libmpichfort.so.12.2.2").write_text("host")
    c = fake_rootfs(tmp_path, {"libmpich.so.12": "/usr/lib/libmpich.so.12.1.0"})
    log = Log("t", io.StringIO())
    replace, add = mpi.plan(c, [str(host / "libmpich.so.12"), str(host / "libmpichfort.so.12.2.2")],
                            "full", log)
    assert replace == [(str(host / "libmpich.so.12.2.2"), c.rootfs + "/usr/lib/libmpich.so.12.1.0")]
    assert add == [str(host / "libmpichfort.so.12.2.2")]
    bad = fake_rootfs(tmp_path / "bad", {"libmpich.so.40": "/usr/lib/libmpich.so.40.0.1"})
    with pytest.raises(HookError, match=r"major versions differ \(host 12.2.2 vs container 40.0.1\)"):
        mpi.plan(bad, [str(host / "libmpich.so.12")], "full", log)
    empty = fake_rootfs(tmp_path / "empty", {"libc.so.6": "/lib/libc.so.6"})
    with pytest.raises(HookError, match="the container has none of the host's MPI libraries"):
        mpi.plan(empty, [str(host / "libmpich.so.12")], "full", log)


def test_glibc_not_applicable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run_hook(monkeypatch, tmp_path, glibc, {}, {}) == 0
    assert "com.hooks.glibc.enabled is not 'true'" in capsys.readouterr().err
    enabled = {"com.hooks.glibc.enabled": "true"}
    assert run_hook(monkeypatch, tmp_path, glibc, enabled, {}) == 1
    assert "GLIBC_LIBS is not set" in capsys.readouterr().err
    fake_rootfs(tmp_path, {"libz.so.1": "/lib/libz.so.1"})  # a static/musl-like image
    assert run_hook(monkeypatch, tmp_path, glibc, enabled, {"GLIBC_LIBS": HOST_LIBC}) == 0
    assert "no libc.so.6 in the container's linker cache" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(HOST_LIBC), reason="not an x86-64 Debian host")
def test_glibc_newer_container_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    fake_rootfs(tmp_path, {"libc.so.6": "/lib/libc.so.6"})
    (tmp_path / "rootfs/lib/libc.so.6").write_bytes(b"GNU C Library release version 2.99.\n")
    enabled = {"com.hooks.glibc.enabled": "true"}
    assert run_hook(monkeypatch, tmp_path, glibc, enabled, {"GLIBC_LIBS": HOST_LIBC}) == 0
    assert "not older than the host's" in capsys.readouterr().err
