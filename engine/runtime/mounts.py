"""Pure parsers for ``--mount`` and ``--device`` (Sarus syntax) and the user-mount rules.

* ``--mount=type=bind,src|source=PATH,dst|destination|target=PATH[,readonly]``: both paths
  absolute; ``readonly`` (or ``ro``) makes the bind read-only.
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
from typing import Any, NamedTuple

from hpc_exec.errors import InvalidInput, SecurityError

__all__ = ["DeviceSpec", "MountSpec", "check_user_destination", "mount_spec_text",
           "parse_device", "parse_mount"]

_SRC_KEYS = ("src", "source")
_DST_KEYS = ("dst", "destination", "target")


# NamedTuple, not dataclass: a dataclass costs ~1-2 ms to create at import, per task.
class MountSpec(NamedTuple):
    source: str
    destination: str
    readonly: bool = False


class DeviceSpec(NamedTuple):
    source: str
    destination: str
    access: str = "rwm"


def _absolute(path: str, what: str, spec: str) -> str:
    if not path.startswith("/"):
        raise InvalidInput(f"{what} must be an absolute path, got {path!r} in {spec!r}")
    if "\0" in path:
        raise InvalidInput(f"{what} contains a NUL byte in {spec!r}")
    return posixpath.normpath(path).replace("//", "/")


def parse_mount(spec: str) -> MountSpec:
    """Parse one ``--mount`` value."""
    fields: dict[str, str] = {}
    readonly = False
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            if key in ("readonly", "ro"):
                readonly = True
                continue
            raise InvalidInput(f"invalid mount option {item!r} in {spec!r} (expected key=value "
                               "or 'readonly')")
        if key in ("readonly", "ro"):
            if value.lower() not in ("true", "1", "false", "0"):
                raise InvalidInput(f"invalid value {value!r} for readonly in {spec!r}")
            readonly = value.lower() in ("true", "1")
            continue
        canonical = ("source" if key in _SRC_KEYS else "destination" if key in _DST_KEYS
                     else key)
        if canonical not in ("type", "source", "destination", "bind-propagation"):
            raise InvalidInput(f"unknown mount option {key!r} in {spec!r}")
        if canonical in fields:
            raise InvalidInput(f"mount option {key!r} given twice in {spec!r}")
        fields[canonical] = value
    kind = fields.get("type")
    if kind is None:
        raise InvalidInput(f"mount {spec!r} lacks type=bind")
    if kind != "bind":
        raise InvalidInput(f"unsupported mount type {kind!r} in {spec!r} (only 'bind')")
    if "source" not in fields:
        raise InvalidInput(f"mount {spec!r} lacks a source (src=/path)")
    if "destination" not in fields:
        raise InvalidInput(f"mount {spec!r} lacks a destination (dst=/path)")
    src = _absolute(fields["source"], "mount source", spec)
    dst = _absolute(fields["destination"], "mount destination", spec)
    return MountSpec(src, dst, readonly)


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
    """Parse one ``--device`` value: HOST[:CONTAINER][:ACCESS]."""
    parts = spec.split(":")
    if not parts[0]:
        raise InvalidInput(f"device {spec!r} lacks a host path")
    if len(parts) > 3:
        raise InvalidInput(f"invalid device {spec!r} (expected HOST[:CONTAINER][:ACCESS])")
    access = "rwm"
    if len(parts) >= 2 and not parts[-1].startswith("/"):
        access = parts.pop()
        if not access or any(c not in "rwm" for c in access):
            raise InvalidInput(f"invalid device access {access!r} in {spec!r} (letters r, w, m)")
        if len(set(access)) != len(access):
            raise InvalidInput(f"device access {access!r} repeats a letter in {spec!r}")
    if len(parts) > 2:
        raise InvalidInput(f"invalid device {spec!r} (expected HOST[:CONTAINER][:ACCESS])")
    src = _absolute(parts[0], "device path", spec)
    dst = _absolute(parts[1], "device path in the container", spec) if len(parts) == 2 else src
    return DeviceSpec(src, dst, "".join(c for c in "rwm" if c in access))


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
