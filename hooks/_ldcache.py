"""Read a glibc dynamic linker cache (``etc/ld.so.cache``) without running ldconfig.

:func:`parse` returns the ``(soname, path)`` entries of this machine's architecture, in cache
order (the order the dynamic linker prefers). It reads the "new" format (magic
``glibc-ld.so.cache1.1``, written alone since glibc 2.32 and after the old ``ld.so-1.7.0``
table before that): a 48-byte header, then 24-byte entries ``(int32 flags, uint32 key,
uint32 value, uint32 osversion, uint64 hwcap)`` whose key and value are offsets of
NUL-terminated strings from the start of the new header.

Hooks use it to find libraries in a container (libfabric for the mount hook's
``<FI_PROVIDER_PATH>``, libmpi for the MPI hook) cheaply and without executing anything.
"""

from __future__ import annotations

import os
import struct

from hpc_exec.hooks._state import HookError

__all__ = ["MAGIC_NEW", "arch_flags", "build", "find", "parse", "read"]

MAGIC_OLD = b"ld.so-1.7.0"
MAGIC_NEW = b"glibc-ld.so.cache1.1"
_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext offset
_ENTRY = struct.Struct("<iIIIQ")
_OLD_ENTRY = 12
# FLAG_ELF_LIBC6 (3) with the required-arch byte of ldconfig's flags, per machine
_ARCH = {"x86_64": 0x0303, "aarch64": 0x0A03, "ppc64le": 0x0503, "riscv64": 0x1103}


def arch_flags(machine: str | None = None) -> int | None:
    """The entry flags of 64-bit libc6 libraries on ``machine`` (None: accept every entry)."""
    return _ARCH.get(machine or os.uname().machine)


def parse(data: bytes, flags: int | None = -1) -> list[tuple[str, str]]:
    """``(soname, path)`` pairs of the cache ``data`` whose flags are ``flags`` (default: this
    machine's, see :func:`arch_flags`; None: all). ValueError when ``data`` is not a cache."""
    want = arch_flags() if flags == -1 else flags
    start = 0
    if data.startswith(MAGIC_OLD):
        (nlibs,) = struct.unpack_from("<I", data, 12)
        start = 16 + nlibs * _OLD_ENTRY
        start = (start + 7) & ~7  # the new header is 8-byte aligned after the old table
    if data[start:start + len(MAGIC_NEW)] != MAGIC_NEW:
        raise ValueError("not a glibc ld.so.cache in the 1.1 format")
    _, nlibs, _, _, _ = _HEADER.unpack_from(data, start)
    out: list[tuple[str, str]] = []
    base = start + _HEADER.size
    for i in range(nlibs):
        entry_flags, key, value, _, _ = _ENTRY.unpack_from(data, base + i * _ENTRY.size)
        if want is not None and entry_flags != want:
            continue
        out.append((_string(data, start + key), _string(data, start + value)))
    return out


def _string(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return os.fsdecode(data[offset:end])


def read(rootfs: str) -> list[tuple[str, str]]:
    """The entries of ``<rootfs>/etc/ld.so.cache`` ([] when there is none)."""
    path = os.path.join(rootfs, "etc/ld.so.cache")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HookError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return parse(data)
    except (ValueError, struct.error) as exc:
        raise HookError(f"{path} is not a linker cache glibc 2.32+ can read: {exc}") from exc


def find(entries: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """The entries whose soname is ``prefix`` or starts with ``prefix + "."``."""
    return [(s, p) for s, p in entries if s == prefix or s.startswith(prefix + ".")]


def build(entries: list[tuple[str, str]], flags: int | None = None, *, old: bool = False
          ) -> bytes:
    """A cache holding ``(soname, path)`` entries, the inverse of :func:`parse` (tests and
    fake rootfs trees; ldconfig writes the real ones). ``old`` prepends an empty old table."""
    flags = (arch_flags() or 0x0303) if flags is None else flags
    strings = b""
    offsets = []
    base = _HEADER.size + _ENTRY.size * len(entries)
    for soname, path in entries:
        key = base + len(strings)
        strings += os.fsencode(soname) + b"\0"
        offsets.append((key, base + len(strings)))
        strings += os.fsencode(path) + b"\0"
    data = _HEADER.pack(MAGIC_NEW, len(entries), len(strings), 2, 0)
    for key, value in offsets:
        data += _ENTRY.pack(flags, key, value, 0, 0)
    data += strings
    if old:
        data = MAGIC_OLD + b"\0" + struct.pack("<I", 0) + data  # 16 bytes: stays aligned
    return data
