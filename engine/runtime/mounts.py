"""The user-mount rules of the site config (the ``--mount``/``--device`` syntax itself is
parsed once, at the edges, by :mod:`hpc_exec.mountspec`).

:func:`check_user_destination` applies ``userMounts``: a destination may not be one of
``notAllowedPaths`` nor lie under one of ``notAllowedPrefixesOfPath``. Nothing here touches the
filesystem; a forbidden destination raises :class:`~hpc_exec.errors.SecurityError`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from hpc_exec.errors import SecurityError

__all__ = ["check_user_destination"]


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return path == prefix or path.startswith(prefix + "/") or prefix == "/"


def check_user_destination(destination: str, not_allowed_prefixes: Iterable[str],
                           not_allowed_paths: Iterable[str]) -> None:
    """Refuse a user mount destination the site rules forbid (SecurityError naming the rule)."""
    dst = posixpath.normpath(destination)
    for path in not_allowed_paths:
        if dst == posixpath.normpath(path):
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"destination cannot be '{path}'")
    for prefix in not_allowed_prefixes:
        if _under(dst, posixpath.normpath(prefix)):
            raise SecurityError(f"mount destination {destination!r} is not allowed: "
                                f"destination cannot be a subdirectory of '{prefix}'")
