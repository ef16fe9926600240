"""Replacing a file atomically: the one way hpc-exec's CLI and testbed write a file others read.

A temporary file in the same directory, written, optionally fsynced, given its mode, then
``os.replace``d over the target, so a reader sees the old file or the new one, never half of
either; the temporary file is removed if anything fails. (The image cache has its own writer
under its lock: engine/store.) Also :func:`free_bytes`, what a full-disk error is judged by.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["free_bytes", "replace_file"]


def replace_file(path: Path, text: str, *, mode: int = 0o644, fsync: bool = False) -> None:
    """Atomically make ``path`` hold ``text`` (UTF-8), with permissions ``mode``."""
    import tempfile  # not at import: 'hpc-exec run' starts faster without it

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def free_bytes(directory: Path) -> int | None:
    """Bytes this user may still write on the filesystem of ``directory`` (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
