"""Build a squashfs image from a stream of tar data with ``tar2sqfs`` (squashfs-tools-ng).

Contract: :func:`squash` runs ``tar2sqfs`` with the site's compression (zstd level 3, 1 MiB
blocks by default; :class:`~hpc_exec.config.SquashfsOptions`), calls ``write_tar`` with the
program's stdin, and returns when ``dest`` is complete and fsynced. Nothing is unpacked to disk.
On any failure ``dest`` is removed and the error raised: ImageContentError for errors raised by
``write_tar`` itself, CommandFailed when tar2sqfs fails. ``dest`` must be a temp name; the caller
publishes it by rename (engine/store).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from hpc_exec import process
from hpc_exec.config import SquashfsOptions

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
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
