"""Pure parsers for ``--mount`` and ``--device`` (Sarus syntax) and the user-mount rules.

* ``--mount=type=bind,src|source=PATH,dst|destination|target=PATH[,readonly]
  [,bind-propagation=MODE]``: both paths absolute; ``readonly`` (or ``ro``) makes the bind
  read-only.
* ``--device=HOST[:CONTAINER][:ACCESS]``: absolute device paths; ACCESS is made of the letters
  ``r``, ``w``, ``m``, each at most once (default ``rwm``).
* :func:`check_user_destination` applies ``userMounts`` from the site config: a destination may
  not be one of ``notAllowedPaths`` nor lie under one of ``notAllowedPrefixesOfPath``.

Nothing here touches the filesystem; bad input raises :class:`~hpc_exec.errors.InvalidInput`
(a ``ValueError``) naming the offending value, or :class:`~hpc_exec.errors.SecurityError` for a
forbidden destination.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from hpc_exec.hooks import _mount as _hm
from hpc_exec.hooks._state import HookError

from hpc_exec.errors import InvalidInput, SecurityError

__all__ = ["DeviceSpec", "MountSpec", "check_user_destination", "mount_spec_text",
           "parse_device", "parse_mount"]

# One parser of the --mount/--device syntax, shared with the hooks (which may import nothing
# of the engine): hooks/_mount.py. Here its HookError becomes the engine's InvalidInput.
MountSpec = _hm.MountSpec
DeviceSpec = _hm.DeviceSpec


def parse_mount(spec: str) -> MountSpec:
    """Parse one ``--mount`` value (InvalidInput naming the bad part)."""
    try:
        return _hm.parse_mount(spec)
    except HookError as exc:
        raise InvalidInput(str(exc)) from None


def mount_spec_text(item: Mapping[str, Any]) -> str:
    """A ``siteMounts`` mapping ({type, source, destination, readonly}) as --mount text."""
    parts = [f"type={item.get('type', 'bind')}"]
    for key in ("source", "destination"):
        if key in item:
            parts.append(f"{key}={item[key]}")
    extra = set(item) - {"type", "source", "destination", "readonly"}
    if extra:
        raise InvalidInput(f"unknown site mount field(s) {', '.join(sorted(extra))}")
    if item.get("readonly"):
        parts.append("readonly")
    return ",".join(parts)


def parse_device(spec: str) -> DeviceSpec:
    """Parse one ``--device`` value: HOST[:CONTAINER][:ACCESS] (InvalidInput when invalid)."""
    try:
        return _hm.parse_device(spec)
    except HookError as exc:
        raise InvalidInput(str(exc)) from None


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
