"""A minimal, fast streaming tar reader and writer for the layer flattener.

Why not :mod:`tarfile`: flattening copies every member of every layer, and tarfile re-parses
and re-encodes each header in Python (checksums, PAX records, TarInfo objects); on the 3-layer
test image that cost more than the whole squashfs compression. Here a member's header blocks are
kept as read and written out unchanged unless its name must change, so the per-member cost is
one 512-byte parse.

Contract:

* :class:`Reader` yields :class:`Member` objects in archive order from a forward-only stream.
  ``member.raw`` holds all header blocks (PAX ``x``, GNU ``L``/``K`` and the member's own
  ustar block). POSIX ustar, PAX (path, linkpath, size) and GNU long names are understood; a
  PAX global header is skipped; a bad checksum, a truncated archive or an unsupported member
  type (GNU sparse) raises :class:`TarFormatError`.
* Data not consumed with :meth:`Reader.copy_data` is skipped when iteration resumes.
* :func:`renamed_header` rebuilds the header blocks with a new path (and link path) as one PAX
  header plus the original ustar block, so ownership, mode, mtime, device numbers and xattrs
  are kept.
* :func:`end_of_archive` is the two zero blocks that end a tar.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

__all__ = ["Member", "Reader", "TarFormatError", "end_of_archive", "renamed_header"]

BLOCK = 512
_ZERO = bytes(BLOCK)
_CHUNK = 1 << 20
REGULAR = (b"0", b"\0", b"7")
_LINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO = b"1", b"2", b"3", b"4", b"5", b"6"


class TarFormatError(ValueError):
    pass


def _pad(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as exc:
        raise TarFormatError(f"bad numeric field {field!r}") from exc


def _pax_records(data: bytes) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("bad PAX record")
        try:
            length = int(data[pos:space])
        except ValueError as exc:
            raise TarFormatError("bad PAX record length") from exc
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("bad PAX record length")
        record = data[space + 1:pos + length - 1]  # without the trailing newline
        key, sep, value = record.partition(b"=")
        if not sep:
            raise TarFormatError("bad PAX record")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


@dataclass
class Member:
    name: str
    linkname: str
    type: bytes
    size: int  # bytes of data that follow the header
    raw: bytes  # all header blocks, as read
    pax: dict[str, bytes]

    def isdir(self) -> bool:
        return self.type == _DIR or (self.type in REGULAR and self.name.endswith("/"))

    def isreg(self) -> bool:
        return self.type in REGULAR and not self.name.endswith("/")

    def issym(self) -> bool:
        return self.type == _SYMLINK

    def islnk(self) -> bool:
        return self.type == _LINK

    def isdev(self) -> bool:
        return self.type in (_CHR, _BLK)


class Reader:
    def __init__(self, stream: IO[bytes]) -> None:
        self.f = stream
        self._skip = 0  # data (padded) of the current member not yet consumed

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:
                raise TarFormatError("unexpected end of data")
            data += more
        return data

    def _discard(self, n: int) -> None:
        while n > 0:
            chunk = self.f.read(min(n, _CHUNK))
            if not chunk:
                raise TarFormatError("unexpected end of data")
            n -= len(chunk)

    def copy_data(self, member: Member, out: IO[bytes]) -> None:
        """Copy the member's data, padded to whole blocks, to ``out``."""
        n = _pad(member.size)
        if n != self._skip:
            raise TarFormatError("data already consumed")
        while n > 0:
            chunk = self.f.read(min(n, _CHUNK))
            if not chunk:
                raise TarFormatError("unexpected end of data")
            out.write(chunk)
            n -= len(chunk)
        self._skip = 0

    def __iter__(self) -> Iterator[Member]:
        while True:
            if self._skip:
                self._discard(self._skip)
                self._skip = 0
            raw = bytearray()
            pax: dict[str, bytes] = {}
            longname = longlink = None
            while True:
                block = self.f.read(BLOCK)
                if len(block) < BLOCK:
                    if not block and not raw:
                        return  # no end-of-archive blocks: tolerated, as tar(1) does
                    block += self._read(BLOCK - len(block)) if block else b""
                    if len(block) < BLOCK:
                        raise TarFormatError("unexpected end of data")
                if block == _ZERO:
                    if raw:
                        raise TarFormatError("end of archive inside a member's headers")
                    return
                checksum = _number(block[148:156])
                if checksum != sum(block[:148]) + 256 + sum(block[156:]):
                    raise TarFormatError("bad header checksum")
                kind = block[156:157]
                size = _number(block[124:136])
                if size < 0:
                    raise TarFormatError("negative size")
                if kind in (b"x", b"g", b"L", b"K"):
                    data = self._read(_pad(size))
                    if kind == b"g":
                        continue  # global PAX header: nothing we rely on
                    raw += block
                    raw += data
                    if kind == b"x":
                        pax.update(_pax_records(data[:size]))
                    elif kind == b"L":
                        longname = _text(data[:size])
                    else:
                        longlink = _text(data[:size])
                    continue
                if kind == b"S":
                    raise TarFormatError("GNU sparse members are not supported")
                raw += block
                name = _text(block[0:100])
                if block[257:262] == b"ustar":
                    prefix = _text(block[345:500])
                    if prefix:
                        name = f"{prefix}/{name}"
                if longname is not None:
                    name = longname
                if "path" in pax:
                    name = pax["path"].decode("utf-8", "surrogateescape")
                linkname = _text(block[157:257])
                if longlink is not None:
                    linkname = longlink
                if "linkpath" in pax:
                    linkname = pax["linkpath"].decode("utf-8", "surrogateescape")
                if "size" in pax:
                    try:
                        size = int(pax["size"])
                    except ValueError as exc:
                        raise TarFormatError("bad PAX size") from exc
                if kind not in (*REGULAR, _LINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO):
                    raise TarFormatError(f"unsupported member type {kind!r}")
                data_size = size if kind in REGULAR else 0
                self._skip = _pad(data_size)
                yield Member(name, linkname, kind, data_size, bytes(raw), pax)
                break


def _header_block(name: bytes, kind: bytes, size: int) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name)] = name[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def _record(key: str, value: bytes) -> bytes:
    body = key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    n = len(body) + 2
    while len(str(n)) + 1 + len(body) != n:
        n = len(str(n)) + 1 + len(body)
    return str(n).encode() + b" " + body


def renamed_header(member: Member, name: str, linkname: str | None = None) -> bytes:
    """Header blocks for ``member`` under ``name`` (and hard link target ``linkname``)."""
    own = member.raw[-BLOCK:]
    records = {k: v for k, v in member.pax.items() if k not in ("path", "linkpath")}
    records["path"] = name.encode("utf-8", "surrogateescape")
    if linkname is not None:
        records["linkpath"] = linkname.encode("utf-8", "surrogateescape")
    data = b"".join(_record(k, v) for k, v in records.items())
    return (_header_block(b"././@PaxHeader", b"x", len(data)) + data
            + bytes(_pad(len(data)) - len(data)) + own)


def end_of_archive() -> bytes:
    return bytes(2 * BLOCK)
