"""Flatten an image's layers into ONE tar stream, safely, without touching the disk.

Contract (:func:`flatten`):

* Layers are given bottom-first and read once each, top-first: a member is written only if no
  upper layer replaced, deleted (``.wh.<name>``) or hid (opaque ``.wh..wh..opq``) it, so the
  output holds each path exactly once with the metadata of its topmost version (OCI image spec,
  "Applying changesets"). Other ``.wh..wh.*`` (aufs metadata) members are dropped.
* Ownership, modes, mtimes, symlinks, hard links, fifos and PAX xattrs are kept. Character and
  block devices are skipped with a note (containers get their /dev from the runtime).
* Directory entries may follow their children; the squashfs writer (tar2sqfs) fills in
  implicit parents and resolves hard links at the end, so order does not matter.
* Refused with :class:`~hpc_exec.errors.ImageContentError` naming the layer digest and the
  member: absolute paths, ``..`` components, a member below a symlink of the same layer (a
  write through a symlink), a symlink that members of its own or an upper layer were written
  below (a write through it across layers), a hard link whose target is absolute, contains
  ``..`` or passes through a symlink.
* Tar headers are parsed and copied by :mod:`~hpc_exec.engine.image.tarstream` (kept as read
  unless a name needs cleaning), so a layer costs little more than its gzip decompression.
* A hard link whose target an upper layer deleted or replaced is dropped with a note (a
  one-pass flattener cannot recover the old content; real images do not do this).

Nothing is ever extracted: the output only goes to ``out`` (the stdin of tar2sqfs).
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, cast

from hpc_exec.engine.image.tarstream import (
    Member,
    Reader,
    TarFormatError,
    end_of_archive,
    renamed_header,
)

from hpc_exec.errors import ImageContentError

__all__ = ["FlattenResult", "LayerSource", "clean_name", "flatten"]

log = logging.getLogger(__name__)

WH = ".wh."
OPAQUE = ".wh..wh..opq"
_BUF = 1 << 20
_DIR, _LINK, _OTHER = "d", "l", "f"


@dataclass(frozen=True)
class LayerSource:
    """One layer: its digest (for messages), how to open its bytes, its compression."""

    digest: str
    open: Callable[[], IO[bytes]]
    compression: str = "gzip"  # "gzip" or "" (plain tar); zstd is decompressed beforehand


@dataclass
class FlattenResult:
    members: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


class _Refused(Exception):
    pass


def clean_name(name: str) -> str:
    """Normalise a member name to ``a/b/c`` ('' for the root); _Refused if it escapes."""
    if name.startswith("/"):
        raise _Refused("absolute path")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise _Refused("'..' in path")
        parts.append(part)
    return "/".join(parts)


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class _Merger:
    """Top-down state: what upper layers wrote, deleted and made opaque."""

    def __init__(self, out: IO[bytes], result: FlattenResult) -> None:
        self.out = out
        self.result = result
        self.emitted: dict[str, tuple[str, int]] = {}  # path -> (kind, layer number)
        self.implicit: dict[str, int] = {}  # parent dirs of emitted paths -> first layer
        self.deleted: set[str] = set()  # whiteouts of upper layers
        self.opaque: set[str] = set()  # opaque dirs of upper layers

    def hidden_by_upper(self, path: str, layer: int) -> bool:
        """True if an upper layer hides ``path``; _Refused for a same-layer symlink parent."""
        if path in self.deleted:
            return True
        for anc in _ancestors(path):
            if anc in self.deleted or anc in self.opaque:
                return True
            got = self.emitted.get(anc)
            if got is not None and got[0] != _DIR:
                if got[1] == layer and got[0] == _LINK:
                    raise _Refused(f"writes through symlink {anc!r}")
                return True
        return False

    def layer(self, number: int, src: LayerSource) -> None:
        deleted: set[str] = set()
        opaque: set[str] = set()
        devices = 0
        with src.open() as raw:
            try:
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) \
                    if src.compression == "gzip" else raw
                reader = Reader(stream)
                for member in reader:
                    try:
                        devices += self.member(number, reader, member, deleted, opaque)
                    except _Refused as exc:
                        raise ImageContentError(f"layer {src.digest}: member "
                                                f"{member.name!r} refused: {exc}") from exc
            except (TarFormatError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
                raise ImageContentError(f"layer {src.digest} is not a readable tar: "
                                        f"{exc}") from exc
        self.deleted |= deleted
        self.opaque |= opaque
        if devices:
            self.result.notes.append(f"layer {src.digest[:19]}: skipped {devices} device "
                                     "file(s); the runtime provides /dev")

    def member(self, number: int, reader: Reader, m: Member,
               deleted: set[str], opaque: set[str]) -> int:
        path = clean_name(m.name)
        if not path:
            return 0  # the root directory itself: tar2sqfs uses defaults
        parent, _, base = path.rpartition("/")
        if base.startswith(WH):
            if base == OPAQUE:
                if parent:
                    opaque.add(parent)
                return 0
            if base.startswith(WH + WH):
                return 0  # aufs metadata (.wh..wh.plnk etc.)
            target = base[len(WH):]
            if target in ("", ".", ".."):
                raise _Refused("bad whiteout name")
            if not self.hidden_by_upper(path, number):
                deleted.add(f"{parent}/{target}" if parent else target)
            return 0
        if m.isdev():
            return 1
        kind = _DIR if m.isdir() else _LINK if m.issym() else _OTHER
        if self.hidden_by_upper(path, number):
            return 0
        if path in self.emitted:
            return 0  # an upper layer (or an earlier duplicate) wrote this path
        first = self.implicit.get(path)
        if first is not None and kind != _DIR:
            if kind == _LINK:  # members of this or an upper layer would land below the link
                raise _Refused("a symlink that members of layer "
                               f"{'this' if first == number else 'above'} write through")
            return 0  # an upper layer made this a directory
        linkname = None
        if m.islnk():
            try:
                linkname = clean_name(m.linkname)
            except _Refused as exc:
                raise _Refused(f"hard link to outside the image ({exc})") from exc
            if not linkname:
                raise _Refused("hard link to the root directory")
            for anc in _ancestors(linkname):
                got = self.emitted.get(anc)
                if got is not None and got[0] == _LINK:
                    raise _Refused(f"hard link through symlink {anc!r}")
            upper = self.emitted.get(linkname)
            if self.hidden_by_upper(linkname, number) or (upper and upper[1] != number):
                self.result.notes.append(f"dropped hard link {path} -> {linkname}: an upper "
                                         "layer replaced its target")
                return 0
        self._write(m, path, linkname, reader)
        self.emitted[path] = (kind, number)
        for anc in _ancestors(path):
            self.implicit.setdefault(anc, number)
        return 0

    def _write(self, m: Member, path: str, linkname: str | None, reader: Reader) -> None:
        same_name = m.name.rstrip("/") == path
        same_link = linkname is None or m.linkname == linkname
        if same_name and same_link:
            self.out.write(m.raw)
        else:
            self.out.write(renamed_header(m, path + ("/" if m.isdir() else ""), linkname))
        if m.size:
            reader.copy_data(m, self.out)
            self.result.bytes += m.size
        self.result.members += 1


def flatten(layers: Sequence[LayerSource], out: IO[bytes]) -> FlattenResult:
    """Write the merged tar of ``layers`` (bottom-first) to ``out``; see the module contract."""
    result = FlattenResult()
    sink = io.BufferedWriter(_Raw(out), _BUF)  # type: ignore[type-var]
    merger = _Merger(sink, result)
    for number in range(len(layers) - 1, -1, -1):
        merger.layer(number, layers[number])
    sink.write(end_of_archive())
    sink.flush()
    for note in result.notes:
        log.debug("%s", note)
    return result


class _Raw(io.RawIOBase):
    """Lets io.BufferedWriter batch small header writes into 1 MiB writes to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.out.write(data)
        return len(data)
