"""``--mount`` and ``--device`` values: their types, their one parser and their one formatter.

This module is part of the base floor and imports only the standard library and
:mod:`hpc_exec.errors` (itself standard-library only), so the engine, the site config, the CLI
and the hook programs all share it.

* ``--mount=type=bind,src|source=PATH,dst|destination|target=PATH[,readonly|ro]
  [,bind-propagation=MODE]`` (Sarus syntax). Both paths are absolute. A comma or a backslash
  inside a value is written with a backslash before it: ``src=/data/a\\,b`` is the path
  ``/data/a,b``. Blanks around an item are ignored; a path that ends in a blank writes it
  as ``\\ ``. A backslash before any other character is kept as it is.
* ``--device=HOST[:CONTAINER][:ACCESS]``: absolute device paths (without ``:``); ACCESS is made
  of the letters ``r``, ``w``, ``m``, each at most once (default ``rwm``).

:func:`format_mount` and :func:`format_device` write the text that :func:`parse_mount` and
:func:`parse_device` read back to the same value. Bad input raises
:class:`~hpc_exec.errors.InvalidInput` (a ``ValueError``) naming the offending value.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from hpc_exec.errors import InvalidInput

__all__ = ["PROPAGATION_MODES", "Device", "Mount", "bind", "format_device", "format_mount",
           "parse_device", "parse_mount"]

PROPAGATION_MODES = ("shared", "slave", "private", "rshared", "rslave", "rprivate")


class Mount(NamedTuple):
    """A bind mount of host ``source`` at container ``destination``."""

    source: str
    destination: str
    readonly: bool = False
    propagation: str = ""  # one of PROPAGATION_MODES, or "" for the default


class Device(NamedTuple):
    """Host device node ``source`` at container ``destination`` with cgroup ``access``."""

    source: str
    destination: str
    access: str = "rwm"


def _absolute(path: str, what: str, spec: str) -> str:
    if not path.startswith("/"):
        raise InvalidInput(f"{what} must be an absolute path, got {path!r} in {spec!r}")
    if "\0" in path:
        raise InvalidInput(f"{what} contains a NUL byte in {spec!r}")
    return os.path.normpath(path).replace("//", "/")


_ESCAPABLE = ",\\ \t"


def _split_items(spec: str) -> list[str]:
    """Split at commas not escaped by a backslash, drop the unescaped blanks around each item,
    and remove the backslash of ``\\,``, ``\\\\``, ``\\ `` and ``\\<tab>``."""
    items: list[str] = []
    current: list[tuple[str, bool]] = []  # (character, escaped)

    def close() -> None:
        while current and not current[-1][1] and current[-1][0] in " \t":
            current.pop()
        while current and not current[0][1] and current[0][0] in " \t":
            current.pop(0)
        items.append("".join(c for c, _ in current))
        current.clear()

    i = 0
    while i < len(spec):
        c = spec[i]
        if c == "\\" and i + 1 < len(spec) and spec[i + 1] in _ESCAPABLE:
            current.append((spec[i + 1], True))
            i += 2
            continue
        if c == ",":
            close()
        else:
            current.append((c, False))
        i += 1
    close()
    return items


def _escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace(",", "\\,")
    stripped = value.rstrip(" \t")  # blanks that end a value would be dropped: escape them
    return stripped + "".join("\\" + c for c in value[len(stripped):])


_KEYS = {"src": "source", "source": "source", "dst": "destination",
         "destination": "destination", "target": "destination", "type": "type",
         "bind-propagation": "bind-propagation"}


def parse_mount(spec: str) -> Mount:
    """Parse one ``--mount`` value."""
    fields: dict[str, str] = {}
    readonly = False
    for item in _split_items(spec):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro"):
            if sep and value.lower() not in ("true", "1", "false", "0"):
                raise InvalidInput(f"invalid value {value!r} for readonly in {spec!r}")
            readonly = not sep or value.lower() in ("true", "1")
            continue
        if not sep:
            raise InvalidInput(f"invalid mount option {item!r} in {spec!r} (expected "
                               "key=value or 'readonly'; write a comma in a path as '\\,')")
        canonical = _KEYS.get(key)
        if canonical is None:
            raise InvalidInput(f"unknown mount option {key!r} in {spec!r}")
        if canonical in fields:
            raise InvalidInput(f"mount option {key!r} given twice in {spec!r}")
        fields[canonical] = value
    kind = fields.get("type")
    if kind is None:
        raise InvalidInput(f"mount {spec!r} lacks type=bind (it needs type=bind, the only type)")
    if kind != "bind":
        raise InvalidInput(f"unsupported mount type {kind!r} in {spec!r} (it needs type=bind, "
                           "the only type)")
    for key, example in (("source", "src=/path"), ("destination", "dst=/path")):
        if key not in fields:
            raise InvalidInput(f"mount {spec!r} lacks a {key} ({example})")
    return bind(fields["source"], fields["destination"], readonly=readonly,
                propagation=fields.get("bind-propagation", ""), spec=spec)


def bind(source: str, destination: str, *, readonly: bool = False, propagation: str = "",
         spec: str | None = None) -> Mount:
    """A validated :class:`Mount` (absolute paths, normalised; a known propagation mode).

    ``spec`` is the text the values came from, named in errors."""
    where = spec if spec is not None else f"{source}:{destination}"
    if propagation and propagation not in PROPAGATION_MODES:
        raise InvalidInput(f"invalid bind-propagation {propagation!r} in {where!r} "
                           f"(one of {', '.join(PROPAGATION_MODES)})")
    return Mount(_absolute(source, "mount source", where),
                 _absolute(destination, "mount destination", where), bool(readonly),
                 propagation)


def format_mount(mount: Mount) -> str:
    """The ``--mount`` text of ``mount`` (what :func:`parse_mount` reads back)."""
    text = (f"type=bind,source={_escape(mount.source)},"
            f"destination={_escape(mount.destination)}")
    if mount.readonly:
        text += ",readonly"
    if mount.propagation:
        text += f",bind-propagation={mount.propagation}"
    return text


def parse_device(spec: str) -> Device:
    """Parse one ``--device`` value: HOST[:CONTAINER][:ACCESS]."""
    parts = spec.split(":")
    if not parts[0]:
        raise InvalidInput(f"invalid device {spec!r}: it lacks a host path")
    if len(parts) > 3:
        raise InvalidInput(f"invalid device {spec!r} (expected HOST[:CONTAINER][:ACCESS])")
    access = "rwm"
    if len(parts) >= 2 and not parts[-1].startswith("/"):
        access = parts.pop()
        if not access or any(c not in "rwm" for c in access):
            raise InvalidInput(f"invalid device access {access!r} in {spec!r} (letters r, w, m)")
        if len(set(access)) != len(access):
            raise InvalidInput(f"device access {access!r} repeats a letter in {spec!r} "
                               "(invalid device access: each of r, w, m at most once)")
    if len(parts) > 2:
        raise InvalidInput(f"invalid device {spec!r} (expected HOST[:CONTAINER][:ACCESS])")
    src = _absolute(parts[0], "device path", spec)
    dst = _absolute(parts[1], "device path in the container", spec) if len(parts) == 2 else src
    return Device(src, dst, "".join(c for c in "rwm" if c in access))


def format_device(device: Device) -> str:
    """The ``--device`` text of ``device`` (InvalidInput if a path holds ``:``)."""
    for path in (device.source, device.destination):
        if ":" in path:
            raise InvalidInput(f"device path {path!r} contains ':', which --device cannot "
                               "express")
    return f"{device.source}:{device.destination}:{device.access}"
