"""The one owner of every path under a repository (cache) root: docs/cache-layout.md.

Contract:

* No other module joins paths under a repository root; they ask :class:`Layout`.
* ``root/version`` holds :data:`FORMAT_VERSION`. :meth:`Layout.ensure` creates the tree and the
  version file (atomically) and refuses a root written by another format version.
* Image files are content-addressed (``images/<config hex>.squashfs`` and ``.json``). They are
  written under ``tmp/`` (same filesystem), fsynced, and :meth:`Layout.publish` renames them into
  place; a file that is already there is kept and the new copy deleted (same content).
* Temp names are ``tmp/<owner>.<random>``; whoever holds the lock named ``<owner>`` may delete
  ``tmp/<owner>.*`` left by a killed process (:meth:`Layout.remove_stale_temps`).
* ``pulls.log`` is an append-only audit log (one ``O_APPEND`` write per line): who downloaded
  and converted what, and when.
* A ``group_shared`` layout (the site's ``sharedRepositoryDir``) keeps its directories setgid
  and group-writable and its mutable files (index, locks, log) group-writable, so every member
  of the directory's group can pull into it, whatever their umask.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpc_exec.errors import RepositoryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hpc_exec.config import Settings

__all__ = ["FORMAT_VERSION", "Layout", "user_layout"]

FORMAT_VERSION = 1


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise RepositoryError(f"bad content digest {digest!r}")
    return value


class Layout:
    """Paths of one repository root."""

    def __init__(self, root: Path, group_shared: bool = False) -> None:
        self.root = Path(root)
        self.group_shared = group_shared

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    # -- fixed files ---------------------------------------------------------------------------
    @property
    def version_file(self) -> Path:
        return self.root / "version"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.json"

    @property
    def metadata_lock(self) -> Path:
        return self.root / "metadata.lock"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def events(self) -> Path:
        return self.root / "pulls.log"

    # -- content-addressed files ---------------------------------------------------------------
    def squashfs(self, image_id: str) -> Path:
        return self.images_dir / f"{_hex(image_id)}.squashfs"

    def image_metadata(self, image_id: str) -> Path:
        return self.images_dir / f"{_hex(image_id)}.json"

    def pull_lock(self, digest: str) -> Path:
        return self.locks_dir / f"{_hex(digest)}.lock"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        path = (self.root / relative)
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise RepositoryError(f"{self.metadata}: bad file name {relative!r}")
        return path

    # -- temp files ----------------------------------------------------------------------------
    def temp(self, owner: str, suffix: str = "") -> Path:
        """A fresh temp name ``tmp/<owner>.<random><suffix>`` (not created)."""
        import secrets  # here, not at the top: 'hpc-exec run' reads the index on every task

        return self.tmp_dir / f"{owner}.{secrets.token_hex(6)}{suffix}"

    def remove_stale_temps(self, owner: str) -> list[Path]:
        """Delete ``tmp/<owner>.*``; call only while holding the lock that guards ``owner``."""
        removed = []
        for path in self.tmp_dir.glob(f"{owner}.*"):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    @property
    def file_mode(self) -> int | None:
        """Mode for mutable files (locks, index) in a group-shared layout, else None."""
        return 0o664 if self.group_shared else None

    def share(self, path: Path, mode: int = 0o664) -> None:
        """Make ``path`` group-writable in a group-shared layout (best effort: owner only)."""
        if self.group_shared:
            try:
                os.chmod(path, mode)
            except OSError:
                pass

    def publish(self, tmp: Path, final: Path) -> bool:
        """fsync ``tmp`` and rename it to ``final``; False (tmp deleted) if ``final`` exists."""
        if final.exists():
            tmp.unlink(missing_ok=True)
            return False
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        return True

    # -- setup and checks ----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.version_file.exists()

    def ensure(self) -> None:
        """Create the tree if needed; RepositoryError if unwritable or of another version."""
        try:
            for d in (self.root, self.images_dir, self.locks_dir, self.tmp_dir):
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    self.share(d, 0o2775)
            if not self.version_file.exists():
                tmp = self.temp("version")
                tmp.write_text(f"{FORMAT_VERSION}\n")
                self.share(tmp, 0o644)
                os.replace(tmp, self.version_file)
        except OSError as exc:
            raise RepositoryError(f"cannot create repository {self.root}: "
                                  f"{exc.strerror or exc}") from exc
        self.check_version()

    def check_version(self) -> None:
        try:
            text = self.version_file.read_text().strip()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RepositoryError(f"cannot read {self.version_file}: {exc.strerror}") from exc
        if text != str(FORMAT_VERSION):
            raise RepositoryError(
                f"repository {self.root} has format version {text!r}; this hpc-exec reads "
                f"version {FORMAT_VERSION}", hint="use a matching hpc-exec or another "
                "repository (HPC_EXEC_HOME)")

    def writable(self) -> bool:
        probe = self.root if self.root.exists() else self.root.parent
        return os.access(probe, os.W_OK)

    # -- audit log -----------------------------------------------------------------------------
    def log_event(self, kind: str, what: str) -> None:
        import datetime
        import socket

        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        line = f"{now} {socket.gethostname()} {os.getpid()} {kind} {what}\n".encode()
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
        try:
            if self.group_shared and os.fstat(fd).st_uid == os.getuid():
                os.fchmod(fd, 0o664)
            os.write(fd, line)
        finally:
            os.close(fd)


def user_layout(settings: Settings) -> tuple[Layout, str]:
    """The repository this user pulls into and looks in first, and its kind: the site's
    group-writable ``sharedRepositoryDir`` unless ``HPC_EXEC_HOME`` names a private one, else
    the local repository. The one place this rule lives (the API and run's fast path use it)."""
    if settings.shared_repository_dir is not None and not os.environ.get("HPC_EXEC_HOME"):
        return Layout(settings.shared_repository_dir, group_shared=True), "shared"
    return Layout(settings.local_repository()), "local"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
