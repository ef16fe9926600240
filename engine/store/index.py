"""``metadata.json``: the mutable index of a repository, and :class:`ImageEntry`.

Contract:

* Reads take a shared lock on ``metadata.lock`` and writes an exclusive one, both bounded by
  ``repositoryMetadataLockTimings`` (timeoutMs, warning every warningMs). Writes are
  read-modify-write under the lock, to a temp file that is fsynced and then ``os.replace``d, so a
  reader sees the old or the new index, never a torn one, and a killed writer leaves only a temp
  file (removed by the next writer).
* Entries whose squashfs or metadata file vanished are dropped on read (and for good on the next
  write). An entry whose squashfs no longer has its recorded size is kept but reported by
  :meth:`ImageEntry.damage`: lookups refuse it with a hint, and a pull repairs it.
* An entry also records the sha256 of its squashfs, taken when the file was published
  (``squashfs_digest``; entries written before it existed have none: "size only").
  :meth:`Index.verify` hashes each image file once against it (``hpc-exec images --verify``)
  and marks the entries of an image whose bytes changed (``damaged``), so that lookups refuse
  it and a pull repairs it as for a wrong size; storing the new files clears the mark.
* :meth:`Index.remove` deletes the image files when no other entry uses them, and so does
  :meth:`Index.add` for the image a key pointed to before (a tag that moved) -- always after
  the new index is stored, so a failed write never loses an image (issue 12, item 2).
* The format is ``{"version": 1, "images": {key: entry}}`` with file names relative to the
  repository root (docs/cache-layout.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.engine.store.layout import Layout
from hpc_exec.engine.store.lock import FileLock

from hpc_exec.config import LockTimings
from hpc_exec.errors import RepositoryError

__all__ = ["INDEX_VERSION", "ImageEntry", "Index", "Verification"]

INDEX_VERSION = 1
_TEMP_OWNER = "metadata"


class ImageEntry(NamedTuple):
    """One image in a repository; what ``hpc-exec images`` lists and the run side mounts (a
    NamedTuple, not a dataclass: 'hpc-exec run' reads the index on every task)."""

    key: str  # the normalised reference (engine/image/reference.py)
    server: str
    repository: str
    tag: str
    digest: str  # what the reference resolved to in the registry (index or manifest digest)
    image_id: str  # the config digest: names the squashfs
    squashfs: Path
    metadata: Path  # JSON: entrypoint, cmd, env, workdir, user, labels
    created: str  # ISO 8601 UTC time of the pull/load
    size: int  # bytes of the squashfs
    squashfs_digest: str | None = None  # sha256 of the squashfs when published; None: unknown
    damaged: str | None = None  # what Index.verify found wrong with the squashfs, until repaired

    @property
    def pinned(self) -> str:
        """``server/repository@digest``: this image whatever its tag does later (a lookup by
        digest finds it)."""
        return f"{self.server}/{self.repository}@{self.digest}"

    @property
    def short_id(self) -> str:
        return self.image_id.partition(":")[2][:12]

    def to_json(self, layout: Layout) -> dict[str, Any]:
        data = self._asdict()
        data["squashfs"] = layout.relative(self.squashfs)
        data["metadata"] = layout.relative(self.metadata)
        for optional in ("squashfs_digest", "damaged"):  # absent, as in older indexes
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: Any, layout: Layout) -> ImageEntry:
        try:
            return cls(
                key=str(data["key"]), server=str(data["server"]),
                repository=str(data["repository"]), tag=str(data["tag"]),
                digest=str(data["digest"]), image_id=str(data["image_id"]),
                squashfs=layout.resolve(str(data["squashfs"])),
                metadata=layout.resolve(str(data["metadata"])),
                created=str(data["created"]), size=int(data["size"]),
                squashfs_digest=_optional_text(data.get("squashfs_digest")),
                damaged=_optional_text(data.get("damaged")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RepositoryError(f"{layout.metadata}: malformed entry ({exc})") from exc

    def present(self) -> bool:
        return self.squashfs.is_file() and self.metadata.is_file()

    def damage(self) -> str | None:
        """What is wrong with the squashfs (one stat: its size must be the one recorded when
        it was indexed; or what a deep verification found), or None if it looks intact
        (issue 12, item 3)."""
        if self.damaged:
            return self.damaged
        try:
            size = self.squashfs.stat().st_size
        except OSError as exc:
            return f"{self.squashfs}: {exc.strerror}"
        if size != self.size:
            return f"{self.squashfs} has {size} bytes, {self.size} when it was pulled"
        return None


class Verification(NamedTuple):
    """The verdict of :meth:`Index.verify` on one entry: ``status`` is ``ok`` (the sha256
    recorded at publish time matches), ``size only`` (no digest recorded: the size matches),
    or ``damaged`` (``problem`` says why)."""

    entry: ImageEntry
    status: str
    problem: str | None = None


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _verify_file(entry: ImageEntry) -> tuple[str, str | None, bool]:
    """(status, problem, found by hashing) of ``entry``'s squashfs: its size first (one stat),
    then its hash."""
    problem = entry.damage()
    if problem is not None:
        return "damaged", problem, False
    if entry.squashfs_digest is None:
        return "size only", None, False
    from hpc_exec.engine.store.layout import content_digest

    try:
        actual = content_digest(entry.squashfs)
    except OSError as exc:
        return "damaged", f"{entry.squashfs}: {exc.strerror}", False
    if actual != entry.squashfs_digest:
        return "damaged", (f"{entry.squashfs} changed since it was pulled (sha256 now "
                           f"{actual.partition(':')[2]}, recorded "
                           f"{entry.squashfs_digest.partition(':')[2]})"), True
    return "ok", None, False


class Index:
    def __init__(self, layout: Layout, timings: LockTimings | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.layout = layout
        self.timings = timings or LockTimings()
        self.on_wait = on_wait

    def _lock(self, shared: bool) -> FileLock:
        return FileLock(self.layout.metadata_lock, shared=shared,
                        timeout=self.timings.timeout_ms / 1000,
                        warning=self.timings.warning_ms / 1000,
                        what="the repository metadata lock", on_wait=self.on_wait,
                        poll=0.02, mode=self.layout.file_mode)

    # -- reading -------------------------------------------------------------------------------
    def _load(self) -> dict[str, ImageEntry]:
        try:
            text = self.layout.metadata.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RepositoryError(f"cannot read {self.layout.metadata}: {exc.strerror}") \
                from exc
        try:
            data = json.loads(text)  # bytes: a file that is not UTF-8 is a ValueError too
        except (ValueError, RecursionError) as exc:
            raise RepositoryError(f"{self.layout.metadata} is not valid JSON"
                                  + (" (nested too deeply)" if isinstance(exc, RecursionError)
                                     else ""),
                                  hint="restore it or remove it (images must then be "
                                  "pulled again)") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
            raise RepositoryError(f"{self.layout.metadata}: expected an 'images' mapping")
        if data.get("version") != INDEX_VERSION:
            raise RepositoryError(f"{self.layout.metadata}: unknown version "
                                  f"{data.get('version')!r}")
        entries = (ImageEntry.from_json(v, self.layout) for v in data["images"].values())
        return {e.key: e for e in entries if e.present()}

    def read(self) -> dict[str, ImageEntry]:
        """All entries whose files exist, read under a shared lock."""
        if not self.layout.metadata.exists():
            return {}
        if not self.layout.metadata_lock.exists() and not self.layout.writable():
            return self._load()  # read-only repository without a lock file: os.replace'd
        with self._lock(shared=True):
            return self._load()

    def get(self, key: str) -> ImageEntry | None:
        return self.read().get(key)

    def find(self, predicate: Callable[[ImageEntry], bool]) -> ImageEntry | None:
        for entry in self.read().values():
            if predicate(entry):
                return entry
        return None

    # -- writing -------------------------------------------------------------------------------
    def _store(self, entries: dict[str, ImageEntry]) -> None:
        self.layout.remove_stale_temps(_TEMP_OWNER)  # a killed writer's leftovers
        data = {"version": INDEX_VERSION,
                "images": {k: e.to_json(self.layout) for k, e in entries.items()}}  # pull order
        tmp = self.layout.temp(_TEMP_OWNER, ".json")
        try:
            with os.fdopen(self.layout.create_file(tmp), "w") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.layout.metadata)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RepositoryError(f"cannot write {self.layout.metadata}: "
                                  f"{exc.strerror or exc}") from exc

    def update(self, change: Callable[[dict[str, ImageEntry]], None]) -> None:
        """Read-modify-write under the exclusive lock.

        Image files of entries that ``change`` drops, and that no remaining entry uses, are
        deleted only after the new index is stored: a failed write loses nothing."""
        self.layout.ensure()
        with self._lock(shared=False):
            entries = self._load()
            before = dict(entries)
            change(entries)
            self._store(entries)
            in_use = {e.image_id for e in entries.values()}
            for entry in before.values():
                if entry.image_id not in in_use:
                    in_use.add(entry.image_id)  # each image's files once
                    for path in (entry.squashfs, entry.metadata):
                        _unlink(path)

    def add(self, entry: ImageEntry) -> None:
        if not entry.present():
            raise RepositoryError(f"image files of {entry.key} vanished before indexing "
                                  f"({entry.squashfs})", hint="pull again")

        def change(entries: dict[str, ImageEntry]) -> None:
            if not entry.present():  # re-checked under the lock: an rmi may have raced us
                raise RepositoryError(f"image files of {entry.key} vanished before indexing",
                                      hint="pull again")
            new = entry
            if new.squashfs_digest is None:  # reused files: keep what was recorded for them
                new = new._replace(squashfs_digest=next(
                    (o.squashfs_digest for o in entries.values()
                     if o.image_id == new.image_id and o.squashfs_digest), None))
            entries.pop(entry.key, None)  # listed last, in pull order (as Sarus does)
            entries[entry.key] = new._replace(damaged=None)  # a moved tag frees its old image
            for key, other in entries.items():  # the same files (made anew, or checked by
                if other.image_id == new.image_id:  # the pull): one size and digest for all
                    entries[key] = other._replace(size=new.size,
                                           squashfs_digest=new.squashfs_digest, damaged=None)
        self.update(change)

    def verify(self, mark: bool = True) -> list[Verification]:
        """Check every entry's squashfs: its size, then its sha256 against the one recorded at
        publish time (each file hashed once, without holding the lock). With ``mark`` and a
        writable repository, the entries of an image whose bytes changed are marked damaged
        in the index, so that lookups refuse them and the next pull repairs them (a wrong
        size needs no mark: every lookup sees it)."""
        entries = self.read()
        found: dict[tuple[str, str | None], tuple[str, str | None, bool]] = {}
        marks: dict[str, tuple[tuple[int, int, int] | None, str]] = {}
        out = []
        for entry in entries.values():  # pull order, as images lists them
            files = (entry.image_id, entry.squashfs_digest)
            if files not in found:
                before = _file_id(entry.squashfs)
                found[files] = _verify_file(entry)
                if found[files][2]:
                    marks[entry.image_id] = (before, found[files][1] or "damaged")
            status, problem, _ = found[files]
            out.append(Verification(entry, status, problem))
        if mark and marks and self.layout.writable():
            def change(current: dict[str, ImageEntry]) -> None:
                for k, e in current.items():  # not if a pull replaced the file meanwhile
                    if e.image_id in marks and _file_id(e.squashfs) == marks[e.image_id][0]:
                        current[k] = e._replace(damaged=marks[e.image_id][1])
            self.update(change)
        return out

    def remove(self, key: str) -> ImageEntry | None:
        """Drop ``key``; delete its files unless another entry uses them. The removed entry."""
        removed: list[ImageEntry] = []

        def change(entries: dict[str, ImageEntry]) -> None:
            entry = entries.pop(key, None)
            if entry is None:
                return
            removed.append(entry)
        self.update(change)
        return removed[0] if removed else None


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RepositoryError(f"cannot remove {path}: {exc.strerror}") from exc
