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
* Modes are explicit, whatever the umask: directories 0755, files 0644 (published image files
  always 0644). A ``group_shared`` layout (the site's ``sharedRepositoryDir``) keeps its
  directories setgid and group-writable (2775) and its mutable files (index, locks, log)
  group-writable (0664), so every member of the directory's group can pull into it.
* :meth:`Layout.ensure` (before every write) checks that the tree can be written, so a pull or
  an rmi that cannot finish fails before it downloads or deletes anything.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hpc_exec.errors import RepositoryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hpc_exec.config import Settings

__all__ = ["FORMAT_VERSION", "Layout", "content_digest", "user_layout"]

FORMAT_VERSION = 1
IMAGE_FILE_MODE = 0o644  # published (immutable) files: squashfs, image JSON, version


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

    # Modes are set explicitly, whatever the caller's umask (issue 12, item 5): with umask 000
    # another user could otherwise rewrite an image's JSON that root then runs.
    @property
    def dir_mode(self) -> int:
        """Mode of the directories: setgid and group-writable in a group-shared layout."""
        return 0o2775 if self.group_shared else 0o755

    @property
    def file_mode(self) -> int:
        """Mode of the mutable files (index, locks, log): group-writable when group-shared."""
        return 0o664 if self.group_shared else 0o644

    def share(self, path: Path, mode: int = 0o664) -> None:
        """Make ``path`` group-writable in a group-shared layout (best effort: owner only)."""
        if self.group_shared:
            try:
                os.chmod(path, mode)
            except OSError:
                pass

    def create_file(self, path: Path, mode: int | None = None) -> int:
        """Create ``path`` (it must not exist) with exactly ``mode`` (default
        :attr:`file_mode`) whatever the umask; return the open, writable descriptor."""
        mode = self.file_mode if mode is None else mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def publish(self, tmp: Path, final: Path) -> bool:
        """Make ``tmp`` mode 0644, fsync it and move it to ``final`` without ever replacing
        a file there (a hard link, then the temp name removed: two pulls of one image under
        different locks cannot overwrite each other's file); False (tmp deleted) if ``final``
        exists. A file system without hard links gets a check and a rename."""
        if final.exists():
            tmp.unlink(missing_ok=True)
            return False
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, IMAGE_FILE_MODE)  # immutable: nobody writes it, everyone reads it
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
        except FileExistsError:  # another process published it first: theirs stays
            tmp.unlink(missing_ok=True)
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            os.rename(tmp, final)
        else:
            tmp.unlink()
        _fsync_dir(final.parent)
        return True

    # -- setup and checks ----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.version_file.exists()

    def ensure(self) -> None:
        """Create the tree if needed, with explicit modes; RepositoryError if it cannot be
        written (checked before any work, so a failed pull or rmi changes nothing) or is of
        another version."""
        try:
            for d in (self.root, self.images_dir, self.locks_dir, self.tmp_dir):
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    os.chmod(d, self.dir_mode)
                else:
                    self._tighten(d)
        except OSError as exc:
            raise RepositoryError(f"cannot create repository {self.root}: "
                                  f"{exc.strerror or exc}") from exc
        self.check_writable()
        try:
            if not self.version_file.exists():
                tmp = self.temp("version")
                fd = self.create_file(tmp, IMAGE_FILE_MODE)
                try:
                    os.write(fd, f"{FORMAT_VERSION}\n".encode())
                finally:
                    os.close(fd)
                os.replace(tmp, self.version_file)
        except OSError as exc:
            raise RepositoryError(f"cannot create repository {self.root}: "
                                  f"{exc.strerror or exc}") from exc
        self.check_version()

    def _tighten(self, path: Path) -> None:
        """A directory of ours that others may write (made under umask 000 by an older
        hpc-exec) gets its explicit mode; another owner's is left as the admin made it."""
        st = path.stat()
        loose = st.st_mode & 0o022 & ~self.dir_mode
        if loose and st.st_uid == os.getuid():
            os.chmod(path, self.dir_mode)

    def check_writable(self) -> None:
        """RepositoryError unless this process may create files in every directory of the
        tree (the index is replaced by rename in the root, so the root counts too)."""
        for d in (self.root, self.images_dir, self.locks_dir, self.tmp_dir):
            if not os.access(d, os.W_OK | os.X_OK):
                try:
                    readonly = bool(os.statvfs(d).f_flag & os.ST_RDONLY)
                except OSError:
                    readonly = False
                why = "read-only file system" if readonly else "permission denied"
                raise RepositoryError(f"repository {self.root} is not writable: {d}: {why}",
                                      hint="use a repository you can write (HPC_EXEC_HOME), "
                                      "or ask its owner")

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
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     self.file_mode)
        try:
            st = os.fstat(fd)
            if st.st_uid == os.getuid() and st.st_mode & 0o7777 != self.file_mode:
                os.fchmod(fd, self.file_mode)
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


def content_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file at ``path`` (what an index entry records of its squashfs
    when it is published, and what ``hpc-exec images --verify`` compares)."""
    import hashlib

    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
