"""File locks with a timeout and "still waiting" warnings (flock, shared or exclusive).

Contract:

* :class:`FileLock` takes ``flock(2)`` on a separate lock file, exclusive for writers and shared
  for readers. It works across processes and nodes wherever the filesystem supports flock
  (local disks, NFSv4, Lustre/GPFS with flock enabled).
* A wait is bounded by ``timeout`` seconds, then :class:`~hpc_exec.errors.LockTimeout` names the
  file. Every ``warning`` seconds the waiter logs "still waiting for <what> (<file>) after N s"
  and passes the same line to ``on_wait``.
* An exclusive holder may :meth:`FileLock.note` who it is (host, pid, what it does) into the lock
  file; waiters include that in their messages. The lock file is never unlinked or renamed
  (filelock's rule): deleting it would let two processes each "hold" a different inode.
* A process that dies releases its locks (the kernel closes the descriptor).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hpc_exec.errors import LockTimeout, RepositoryError

__all__ = ["FileLock"]

log = logging.getLogger(__name__)


class FileLock:
    def __init__(
        self,
        path: Path,
        *,
        shared: bool = False,
        timeout: float = 60.0,
        warning: float = 10.0,
        what: str = "a lock",
        on_wait: Callable[[str], None] | None = None,
        poll: float = 0.05,
        mode: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.shared = shared
        self.timeout = timeout
        self.warning = warning
        self.what = what
        self.on_wait = on_wait
        self.poll = poll
        self.mode = mode  # e.g. 0o664 in a group-shared repository
        self._fd: int | None = None
        self.waited = 0.0  # seconds the last acquire waited

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o644 if self.mode is None else self.mode)
            if self.mode is not None:
                st = os.fstat(fd)
                if st.st_uid == os.getuid() and st.st_mode & 0o7777 != self.mode:
                    os.fchmod(fd, self.mode)  # whatever the umask made of it
            return fd
        except OSError as exc:
            # A read-only repository (mode, or a read-only mount: EROFS, the usual way a
            # centralized repository reaches compute nodes): a shared lock needs only read
            # access to an existing lock file.
            if self.shared and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                try:
                    return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    pass
            why = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            raise RepositoryError(f"cannot open lock file {self.path}: {why}") from exc

    def holder(self) -> str:
        """What the current exclusive holder wrote with :meth:`note` ('' if nothing)."""
        try:
            with open(self.path, "rb") as f:
                return f.read(512).decode(errors="replace").strip()
        except OSError:
            return ""

    def acquire(self) -> FileLock:
        fd = self._open()
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        start = time.monotonic()
        next_warning = start + self.warning
        delay = 0.001
        try:
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise RepositoryError(f"cannot lock {self.path}: {exc.strerror}") \
                            from exc
                now = time.monotonic()
                if now - start >= self.timeout:
                    raise LockTimeout(str(self.path), self.timeout)
                if now >= next_warning:
                    holder = self.holder()
                    msg = (f"still waiting for {self.what} ({self.path}) after "
                           f"{now - start:.0f} s" + (f"; held by {holder}" if holder else ""))
                    log.warning("%s", msg)
                    if self.on_wait is not None:
                        self.on_wait(msg)
                    next_warning = now + self.warning
                time.sleep(min(delay, self.poll, max(0.0, start + self.timeout - now)))
                delay = min(delay * 2, self.poll)
        except BaseException:
            os.close(fd)
            raise
        self.waited = time.monotonic() - start
        self._fd = fd
        return self

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now."""
        fd = self._open()
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def note(self, text: str) -> None:
        """Record who holds this (exclusive) lock, for waiters' messages."""
        if self._fd is None or self.shared:
            return
        data = text.encode()[:500]
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not self.shared:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
