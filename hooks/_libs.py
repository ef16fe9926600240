"""Shared-library helpers of the MPI and glibc hooks: sonames, versions, ABI rules, mounting.

* :func:`elf_soname` reads ``DT_SONAME`` from an ELF file's dynamic section (32/64-bit, either
  byte order) without running ``readelf``.
* :func:`version_of` takes the numbers after ``.so.`` in a file name
  (``libmpich.so.12.3.0`` → ``(12, 3, 0)``); :func:`glibc_version` finds the release in a
  ``libc.so.6`` ("... release version 2.36.").
* :func:`check_abi` applies the MPICH ABI rules (https://www.mpich.org/abi/) in the modes of
  ``MPI_COMPATIBILITY_TYPE``: ``major`` (majors equal), ``full`` (the default: majors equal
  and host minor ≥ container minor, a lower host minor only warns), ``strict`` (majors and
  minors equal). Missing numbers count as 0.
* :func:`add_library` bind-mounts a host library into a container directory and gives it its
  soname and linker-name symlinks.
"""

from __future__ import annotations

import os
import struct

from hpc_exec.hooks._mount import bind, resolve_in_rootfs
from hpc_exec.hooks._state import HookError

__all__ = [
    "COMPATIBILITY_TYPES",
    "add_library",
    "check_abi",
    "elf_dynamic",
    "elf_soname",
    "glibc_version",
    "linker_name",
    "split_paths",
    "version_of",
]

COMPATIBILITY_TYPES = ("major", "full", "strict")
_SHT_DYNAMIC = 6
_DT_NEEDED = 1
_DT_SONAME = 14


def elf_dynamic(path: str) -> tuple[str | None, list[str]]:
    """(``DT_SONAME`` or None, ``DT_NEEDED`` names) of the ELF file at ``path``; (None, []) when
    it is not ELF or has no dynamic section."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise HookError(f"cannot read {path}: {exc.strerror}") from exc
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None, []
    is64, order = data[4] == 2, "<" if data[5] == 1 else ">"
    soname: str | None = None
    needed: list[str] = []
    try:
        if is64:
            shoff, = struct.unpack_from(order + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x3A)
            shdr, dyn = order + "IIQQQQIIQQ", order + "qQ"
        else:
            shoff, = struct.unpack_from(order + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x2E)
            shdr, dyn = order + "IIIIIIIIII", order + "iI"
        sections = [struct.unpack_from(shdr, data, shoff + i * shentsize) for i in range(shnum)]
        for section in sections:
            if section[1] != _SHT_DYNAMIC:
                continue
            offset, size, link = section[4], section[5], section[6]
            strtab_offset = sections[link][4]
            step = struct.calcsize(dyn)
            for pos in range(offset, offset + size, step):
                tag, value = struct.unpack_from(dyn, data, pos)
                if tag == 0:
                    break
                if tag in (_DT_SONAME, _DT_NEEDED):
                    start = strtab_offset + value
                    name = os.fsdecode(data[start:data.index(b"\0", start)])
                    if tag == _DT_SONAME:
                        soname = name
                    else:
                        needed.append(name)
    except (struct.error, IndexError, ValueError):
        return None, []
    return soname, needed


def elf_soname(path: str) -> str | None:
    """The ``DT_SONAME`` of the ELF shared object at ``path`` (None if it has none or is not
    ELF)."""
    return elf_dynamic(path)[0]


def version_of(name: str) -> tuple[int, ...]:
    """The version numbers after ``.so.`` in a library file name; () when there are none."""
    _, sep, tail = os.path.basename(name).partition(".so.")
    numbers: list[int] = []
    for part in tail.split(".") if sep else []:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def linker_name(name: str) -> str:
    """``libmpich.so.12.3.0`` → ``libmpich.so``."""
    base = os.path.basename(name)
    head, sep, _ = base.partition(".so")
    return head + sep if sep else base


def glibc_version(libc: str) -> tuple[int, ...]:
    """The glibc release of the ``libc.so.6`` at ``libc`` (HookError when not found)."""
    try:
        with open(libc, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise HookError(f"cannot read {libc}: {exc.strerror}") from exc
    marker = b"release version "
    at = data.find(marker)
    if at < 0:
        raise HookError(f"{libc} does not look like a GNU C library (no release version)")
    start = at + len(marker)
    end = start
    while end < len(data) and (data[end:end + 1].isdigit() or data[end:end + 1] == b"."):
        end += 1
    version = tuple(int(p) for p in data[start:end].decode().split(".") if p)
    if not version:
        raise HookError(f"{libc}: unreadable glibc release version")
    return version


def _pad(version: tuple[int, ...]) -> tuple[int, int]:
    padded = (*version, 0, 0)
    return padded[0], padded[1]


def check_abi(host: tuple[int, ...], container: tuple[int, ...], mode: str = "full"
              ) -> str | None:
    """Check host vs container library versions; a warning text, or None. HookError when the
    host library cannot replace the container's."""
    (hmaj, hmin), (cmaj, cmin) = _pad(host), _pad(container)
    shown = f"host {'.'.join(map(str, host)) or '0'} vs container " \
            f"{'.'.join(map(str, container)) or '0'}"
    if hmaj != cmaj:
        raise HookError(f"ABI-incompatible MPI libraries: major versions differ ({shown})")
    if mode == "strict" and hmin != cmin:
        raise HookError(f"ABI-incompatible MPI libraries: minor versions differ and "
                        f"MPI_COMPATIBILITY_TYPE=strict ({shown})")
    if mode == "full" and hmin < cmin:
        return (f"the host's MPI library is older than the container's ({shown}); "
                "trying it anyway, as the MPICH ABI allows within a major version")
    return None


def split_paths(value: str, what: str) -> list[str]:
    """A colon-separated list of absolute paths (empty items ignored)."""
    paths = [p for p in value.split(":") if p.strip()]
    for p in paths:
        if not os.path.isabs(p):
            raise HookError(f"{what}: {p!r} is not an absolute path")
    return paths


def add_library(rootfs: str, host_lib: str, directory: str) -> str:
    """Bind ``host_lib`` (resolved) into container ``directory`` under its file name and add
    soname and linker-name symlinks that do not exist yet; returns the container path."""
    real = os.path.realpath(host_lib)
    name = os.path.basename(real)
    container_path = os.path.join(directory, name)
    bind(real, resolve_in_rootfs(rootfs, container_path), readonly=True)
    for alias in {elf_soname(real) or "", linker_name(name)} - {"", name}:
        link = resolve_in_rootfs(rootfs, os.path.join(directory, alias), follow_last=False)
        if not os.path.lexists(link):
            os.symlink(name, link)
    return container_path
