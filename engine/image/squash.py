"""Build a squashfs image from a stream of tar data with ``tar2sqfs`` (squashfs-tools-ng).

Contract: :func:`squash` runs ``tar2sqfs`` with the site's compression (zstd level 3, 1 MiB
blocks by default; :class:`~hpc_exec.config.SquashfsOptions`), calls ``write_tar`` with the
program's stdin, and returns when ``dest`` is complete and fsynced. Nothing is unpacked to disk.
On any failure ``dest`` is removed and the error raised: ImageContentError for errors raised by
``write_tar`` itself, CommandFailed when tar2sqfs fails, RepositoryError naming the directory
when its filesystem is full. ``dest`` must be a temp name; the caller
publishes it by rename (engine/store).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from hpc_exec import process
from hpc_exec.config import SquashfsOptions
from hpc_exec.errors import CommandFailed, RepositoryError

__all__ = ["squash", "tar2sqfs_argv"]

T = TypeVar("T")

# Compressors whose tar2sqfs ``-X`` options take a ``level``.
_LEVELLED = {"zstd", "gzip", "xz", "lzo", "lzma"}
TIMEOUT = 3600.0  # seconds: a huge image on a slow node, still bounded


def tar2sqfs_argv(dest: Path, options: SquashfsOptions, jobs: int | None = None) -> list[str]:
    """The tar2sqfs command line for ``options`` (pure)."""
    argv = ["tar2sqfs", "--quiet", "--force", "--no-skip",
            "--compressor", options.compression,
            "--block-size", str(options.block_size),
            "--num-jobs", str(jobs or max(1, len(os.sched_getaffinity(0)))),
            "--defaults", "uid=0,gid=0,mode=0755"]
    if options.compression in _LEVELLED:
        argv += ["--comp-extra", f"level={options.level}"]
    return [*argv, str(dest)]


def squash(write_tar: Callable[[IO[bytes]], T], dest: Path, options: SquashfsOptions) -> T:
    """Stream ``write_tar``'s tar into a new squashfs at ``dest``; return what it returned."""
    # tar2sqfs --force writes into the existing file and unlinks it when it fails: a second
    # name keeps the partial output until we have looked at the free space (a full filesystem
    # shows only as "I/O error", and is gone again once the output is deleted).
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    keep: Path | None = dest.with_name(dest.name + ".keep")
    try:
        os.link(dest, keep)  # type: ignore[arg-type]
    except OSError:  # no hard links here: the check below is then only a good guess
        keep = None
    try:
        with process.feed(tar2sqfs_argv(dest, options), timeout=TIMEOUT,
                          desc="building the squashfs image (tar2sqfs)") as stdin:
            result = write_tar(stdin)
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return result
    except BaseException as exc:
        full = isinstance(exc, (CommandFailed, OSError)) and \
            _nearly_full(dest.parent, 2 * options.block_size + (1 << 20))
        dest.unlink(missing_ok=True)
        if full:  # tar2sqfs says only "exit 1" when its output cannot grow (issue 12, item 10)
            raise RepositoryError(f"no space left on the filesystem of {dest.parent} while "
                                  "building the squashfs image",
                                  hint="free space there, or use another repository") from exc
        raise
    finally:
        if keep is not None:
            keep.unlink(missing_ok=True)


def _nearly_full(directory: Path, margin: int) -> bool:
    """Less than ``margin`` bytes left for this user on the filesystem of ``directory`` (a
    failed tar2sqfs could not add its next blocks and tables)."""
    from hpc_exec.files import free_bytes

    free = free_bytes(directory)
    return free is not None and free < margin
