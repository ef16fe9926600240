"""Security checks on the files the engine trusts (when ``securityChecks`` is on).

The site config, the hook JSON files, the hook executables, runc and the init binary must be
owned by root and not writable by group or others, and so must every directory up to ``/``:
otherwise another user could swap what root runs. The rootless idmap helper runs only as the
caller (never for root), so it and its directories may also be the caller's own: a user's
``pip install`` into their own virtualenv carries it (issue 12, item 15); the one packaged beside
the engine's code is not checked at all, being as trusted as the code that runs it. A root-owned
sticky directory (``/tmp``) is
accepted: its sticky bit already stops others from replacing root's entries. A violation is
a :class:`~hpc_exec.errors.SecurityError` naming the offending file or directory.

:func:`check_site_config` runs whatever ``securityChecks`` says, since that file is what turns
the checks off (issue 12, item 9): for root, the site config and its directories must pass the
same check; for another user, the file must be their own or root's and not writable by group or
others (another user's file could add hooks or mounts to their containers).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from hpc_exec.errors import SecurityError

__all__ = ["check_all", "check_site_config", "check_trusted"]


def _check_one(path: Path, what: str, original: Path, owners: tuple[int, ...] = (0,)) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecurityError(f"security check on {what} {original}: cannot stat {path}: "
                            f"{exc.strerror}") from exc
    if st.st_uid not in owners:
        whom = "root" if owners == (0,) else "root or you"
        raise SecurityError(f"security check on {what}: {path} is not owned by {whom} "
                            f"(uid {st.st_uid})",
                            hint="fix its ownership, or turn securityChecks off in the site "
                            "config")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        raise SecurityError(f"security check on {what}: {path} is writable by group or others "
                            f"(mode {stat.S_IMODE(st.st_mode):o})",
                            hint="chmod go-w it, or turn securityChecks off in the site config")


def check_trusted(path: Path, what: str, owners: tuple[int, ...] = (0,)) -> None:
    """Check ``path`` (symlinks resolved) and every parent directory up to ``/``: owned by
    one of ``owners`` (root; root or the caller for what runs only as the caller), not
    writable by group or others."""
    real = Path(os.path.realpath(path))
    _check_one(real, what, path, owners)
    for parent in real.parents:
        _check_one(parent, what, path, owners)


def check_all(items: Iterable[tuple[Path, str]]) -> None:
    seen: set[Path] = set()
    for path, what in items:
        if path not in seen:
            seen.add(path)
            check_trusted(path, what)


def check_site_config(path: Path) -> None:
    """The check of the site config file that ``securityChecks: false`` cannot turn off."""
    uid = os.geteuid()
    if uid == 0:
        check_trusted(path, "the site config")
        return
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except OSError as exc:
        raise SecurityError(f"security check on the site config {path}: cannot stat it: "
                            f"{exc.strerror}") from exc
    if st.st_uid not in (0, uid):
        raise SecurityError(f"security check on the site config: {real} is owned by uid "
                            f"{st.st_uid}, neither root nor you",
                            hint="use a site config owned by root or by yourself")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SecurityError(f"security check on the site config: {real} is writable by group "
                            f"or others (mode {stat.S_IMODE(st.st_mode):o})",
                            hint="chmod go-w it")
