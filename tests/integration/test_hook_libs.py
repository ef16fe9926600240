"""The MPI and glibc hooks doing real binds of host libraries into a rootfs, as root.

The rootfs is a directory with fake container libraries and a linker cache written by
hpc_exec.hooks._ldcache.build; each hook runs in a private mount namespace (unshare), where a
shell then compares files. The host libraries are Debian's mpich and glibc.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hpc_exec.hooks import _ldcache, command

from hpc_exec import process

HOST_MPICH = "/usr/lib/x86_64-linux-gnu/libmpich.so.12"
HOST_MPICHCXX = "/usr/lib/x86_64-linux-gnu/libmpichcxx.so.12"
HOST_MPICHFORT = "/usr/lib/x86_64-linux-gnu/libmpichfort.so.12"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
HOST_LIBM = "/lib/x86_64-linux-gnu/libm.so.6"


def bundle(tmp_path: Path, libs: dict[str, str], annotations: dict[str, str]) -> Path:
    root = tmp_path / "bundle" / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    for path in libs.values():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_bytes(b"fake container library\n")
    (root / "etc/ld.so.cache").write_bytes(_ldcache.build(list(libs.items())))
    (tmp_path / "bundle/config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"}, "process": {"env": []}}))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"ociVersion": "1.0.2", "id": "l", "status": "creating",
                                 "pid": 1, "bundle": str(tmp_path / "bundle"),
                                 "annotations": annotations}))
    return state


def in_namespace(hook: str, state: Path, checks: str, hook_env: dict[str, str]
                 ) -> process.Completed:
    script = f'"$@" < "{state}"; status=$?; {checks}\nexit $status'
    return process.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", *command(hook)], env=dict(os.environ, **hook_env), timeout=120,
                       check=False, desc=f"{hook} hook in a private namespace")


@pytest.mark.requires("root")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH), reason="needs Debian's libmpich12")
def test_mpi_hook_replaces_compatible_libraries(tmp_path: Path) -> None:
    state = bundle(tmp_path, {"libmpich.so.12": "/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.0"},
                   {"com.hooks.mpi.enabled": "true"})
    root = tmp_path / "bundle/rootfs"
    done = in_namespace("mpi", state, f"""
cmp -s "{os.path.realpath(HOST_MPICH)}" "{root}/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.0" \
  && echo replaced
cmp -s "{os.path.realpath(HOST_MPICHCXX)}" "{root}/usr/lib/libmpichcxx.so.12" && echo added
readlink "{root}/usr/lib/libmpichcxx.so"
test -c "{root}/dev/null" && echo device
""", {"MPI_LIBS": f"{HOST_MPICH}:{HOST_MPICHCXX}", "BIND_MOUNTS": "/dev/null",
      "HOOK_LOG_LEVEL": "debug"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["replaced", "added",
                                   os.path.basename(os.path.realpath(HOST_MPICHCXX)), "device"]


@pytest.mark.requires("root")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH), reason="needs Debian's libmpich12")
def test_mpi_hook_refreshes_a_stale_linker_cache_first(tmp_path: Path) -> None:
    # The image's cache knows nothing of its (real, re-versioned) libmpichcxx: with
    # LDCONFIG_PATH the hook refreshes the cache before looking, then again after mounting.
    state = bundle(tmp_path, {}, {"com.hooks.mpi.enabled": "true"})
    root = tmp_path / "bundle/rootfs"
    shutil.copyfile(os.path.realpath(HOST_MPICHCXX), root / "usr/lib/libmpichcxx.so.12.1.0")
    done = in_namespace("mpi", state, f"""
grep -c " {root}/usr/lib/libmpichcxx.so.12.1.0 " /proc/self/mountinfo
""", {"MPI_LIBS": f"{HOST_MPICHCXX}:{HOST_MPICHFORT}", "LDCONFIG_PATH": "/sbin/ldconfig"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
    sonames = {s for s, _ in _ldcache.read(str(root))}
    assert {"libmpichcxx.so.12", "libmpichfort.so.12"} <= sonames


@pytest.mark.requires("root")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH), reason="needs Debian's libmpich12")
def test_mpi_hook_refuses_an_incompatible_major(tmp_path: Path) -> None:
    state = bundle(tmp_path, {"libmpich.so.40": "/usr/lib/libmpich.so.40.1.0"},
                   {"com.hooks.mpi.enabled": "true"})
    done = in_namespace("mpi", state, "true", {"MPI_LIBS": HOST_MPICH})
    assert done.returncode == 1
    assert "major versions differ (host 12." in done.stderr
    assert "vs container 40.1.0)" in done.stderr


@pytest.mark.requires("root")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH), reason="needs Debian's libmpich12")
def test_mpi_hook_warns_about_a_newer_container_minor(tmp_path: Path) -> None:
    state = bundle(tmp_path, {"libmpich.so.12": "/usr/lib/libmpich.so.12.99.0"},
                   {"com.hooks.mpi.enabled": "true"})
    done = in_namespace("mpi", state, "true", {"MPI_LIBS": HOST_MPICH})
    assert done.returncode == 0, done.stderr
    assert "[WARNING] libmpich.so.12." in done.stderr and "older than the container's" \
        in done.stderr


@pytest.mark.requires("root")
@pytest.mark.skipif(not os.path.exists(HOST_LIBC), reason="needs an x86-64 glibc host")
def test_glibc_hook_replaces_an_older_glibc_and_adds_missing_libraries(tmp_path: Path) -> None:
    state = bundle(tmp_path, {"libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6"},
                   {"com.hooks.glibc.enabled": "true"})
    root = tmp_path / "bundle/rootfs"
    (root / "lib/x86_64-linux-gnu/libc.so.6").write_bytes(
        b"GNU C Library (fake) stable release version 2.17.\n")
    done = in_namespace("glibc", state, f"""
cmp -s "{HOST_LIBC}" "{root}/lib/x86_64-linux-gnu/libc.so.6" && echo libc-replaced
cmp -s "{HOST_LIBM}" "{root}/lib/x86_64-linux-gnu/libm.so.6" && echo libm-added
""", {"GLIBC_LIBS": f"{HOST_LIBC}:{HOST_LIBM}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["libc-replaced", "libm-added"]
    assert "replaced the container's glibc (host 2." in done.stderr
