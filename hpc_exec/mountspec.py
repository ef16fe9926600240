"""``--mount`` and ``--device`` values: their types, their one parser and their one formatter.

This module is part of the base floor and imports only the standard library and
:mod:`hpc_exec.errors` (itself standard-library only), so the engine, the site config, the CLI
and the hook programs all share it.

* ``--mount=type=bind,src|source=PATH,dst|destination|target=PATH[,readonly|ro]`` (Sarus
  syntax, as strict: no empty item or trailing comma, one ``=`` per item, no
  ``bind-propagation``: mounts are rprivate). Both paths are absolute. A comma, an ``=`` or a
  backslash inside a value is written with a backslash before it: ``src=/data/a\\,b`` is the
  path ``/data/a,b``. Blanks around an item are ignored; a path that ends in a blank writes it
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

__all__ = ["Device", "Mount", "bind", "format_device", "format_mount", "parse_device",
           "parse_mount"]


class Mount(NamedTuple):
    """A bind mount of host ``source`` at container ``destination``."""

    source: str
    destination: str
    readonly: bool = False  # always recursive and private (rprivate), as in Sarus


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


_ESCAPABLE = ",=\\ \t"
_Item = list[tuple[str, bool]]  # (character, escaped by a backslash)


def _split_items(spec: str) -> list[_Item]:
    """Split at commas not escaped by a backslash and drop the unescaped blanks around each
    item; ``\\,``, ``\\=``, ``\\\\``, ``\\ `` and ``\\<tab>`` stand for the character itself."""
    items: list[_Item] = []
    current: _Item = []

    def close() -> None:
        while current and not current[-1][1] and current[-1][0] in " \t":
            current.pop()
        while current and not current[0][1] and current[0][0] in " \t":
            current.pop(0)
        items.append(list(current))
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


def _text(chars: _Item) -> str:
    return "".join(c for c, _ in chars)


def _escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    stripped = value.rstrip(" \t")  # blanks that end a value would be dropped: escape them
    return stripped + "".join("\\" + c for c in value[len(stripped):])


_KEYS = {"src": "source", "source": "source", "dst": "destination",
         "destination": "destination", "target": "destination", "type": "type"}


def parse_mount(spec: str) -> Mount:
    """Parse one ``--mount`` value (as strictly as Sarus: no empty item, one ``=`` per item)."""
    fields: dict[str, str] = {}
    readonly = False
    for chars in _split_items(spec):
        item = _text(chars)
        if not item:
            raise InvalidInput(f"empty item in mount {spec!r} (check for ',,' or a comma at "
                               "the start or end)")
        equals = [i for i, (c, escaped) in enumerate(chars) if c == "=" and not escaped]
        key = _text(chars[:equals[0]] if equals else chars).strip().lower()
        if len(equals) > 1:
            raise InvalidInput(f"mount option {item!r} in {spec!r} has more than one '=' "
                               "(write an '=' in a path as '\\=')")
        value = _text(chars[equals[0] + 1:]) if equals else ""
        if key in ("readonly", "ro"):
            if equals and value.lower() not in ("true", "1", "false", "0"):
                raise InvalidInput(f"invalid value {value!r} for readonly in {spec!r}")
            readonly = not equals or value.lower() in ("true", "1")
            continue
        if not equals:
            raise InvalidInput(f"invalid mount option {item!r} in {spec!r} (expected "
                               "key=value or 'readonly'; write a comma in a path as '\\,')")
        canonical = _KEYS.get(key)
        if canonical is None:
            hint = (" (Sarus has no bind-propagation either: mounts are always rprivate)"
                    if key == "bind-propagation" else "")
            raise InvalidInput(f"unknown mount option {key!r} in {spec!r}{hint}")
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
    return bind(fields["source"], fields["destination"], readonly=readonly, spec=spec)


def bind(source: str, destination: str, *, readonly: bool = False,
         spec: str | None = None) -> Mount:
    """A validated :class:`Mount` (absolute paths, normalised).

    ``spec`` is the text the values came from, named in errors."""
    where = spec if spec is not None else f"{source}:{destination}"
    return Mount(_absolute(source, "mount source", where),
                 _absolute(destination, "mount destination", where), bool(readonly))


def format_mount(mount: Mount) -> str:
    """The ``--mount`` text of ``mount`` (what :func:`parse_mount` reads back)."""
    text = (f"type=bind,source={_escape(mount.source)},"
            f"destination={_escape(mount.destination)}")
    if mount.readonly:
        text += ",readonly"
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
