"""Pure rules for what runs in the container: options, image config, process args, env,
annotations.

* :class:`RunOptions` holds everything a caller asks of one run, as typed values: mounts and
  devices (:mod:`hpc_exec.mountspec`), environment entries ``(NAME, VALUE)`` or ``(NAME, None)``
  (copy the host's value), annotations ``(KEY, VALUE)``. Text becomes these values once, at the
  edges (the CLI, the site config); nothing here turns them back into text to parse again.
* :class:`Image` is what the run side needs of an image: the squashfs file and its config.
* :class:`ImageConfig` is the part of an OCI image config the run side needs (entrypoint, cmd,
  env, workdir, labels), read from the image's ``metadata`` JSON.
* :func:`process_args` applies the Sarus CLI rules: arguments after the image replace cmd;
  ``--entrypoint X`` replaces the entrypoint (X split into words at blanks, as Sarus does) and
  discards cmd; ``--entrypoint ""`` removes it.
* :func:`merge_environment` merges, in this order: host (nothing with ``clean_env``), image,
  site set/prepend/append/unset, ``-e``. ``-e NAME`` copies the host value (ignored if unset)
  over the image's and the site's, also with ``clean_env``; ``-e NAME=`` sets it empty.
  ``CUDA_VISIBLE_DEVICES`` on the host sets ``NVIDIA_VISIBLE_DEVICES`` and is renumbered from 0,
  as Sarus documents (the container sees only the granted GPUs, numbered 0..n-1).
* :func:`merge_annotations` layers the engine's own, then image labels, then ``--annotation``.

Nothing here touches the system; bad input raises :class:`~hpc_exec.errors.InvalidInput`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.errors import InvalidInput
from hpc_exec.mountspec import Device, Mount

__all__ = ["Image", "ImageConfig", "RunOptions", "check_env_name", "cuda_renumber",
           "merge_annotations", "merge_environment", "parse_annotation", "parse_env_option",
           "process_args"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


# NamedTuples, not dataclasses: a dataclass costs ~1-2 ms to create at import, per task.
class RunOptions(NamedTuple):
    """What one run asks for (docs/run.md); each field has a ``hpc-exec run`` option."""

    command: tuple[str, ...] = ()  # after IMAGE; empty: the image's cmd
    mounts: tuple[Mount, ...] = ()  # --mount
    devices: tuple[Device, ...] = ()  # --device
    env: tuple[tuple[str, str | None], ...] = ()  # -e NAME=VALUE, or -e NAME: (NAME, None)
    clean_env: bool = False  # --clean-env: start from no host variables
    workdir: str | None = None  # --workdir
    entrypoint: str | None = None  # --entrypoint; None: the image's, "": none
    init: bool = False  # --init
    pid: str = "host"  # --pid host|private
    mpi: bool = False  # --mpi
    mpi_type: str | None = None  # --mpi-type
    glibc: bool = False  # --glibc
    ssh: bool = False  # --ssh
    sync: bool = False  # --sync
    annotations: tuple[tuple[str, str], ...] = ()  # --annotation KEY=VALUE
    tty: bool = False  # --tty
    log_level: str | None = None  # the global --debug: "debug"
    name: str | None = None  # --name: the container's name (hpc-exec ps, kill); None: a default


class Image(NamedTuple):
    """What the run side needs of an image: the squashfs and its run config."""

    squashfs: Path
    config: ImageConfig
    name: str = ""

    @classmethod
    def from_entry(cls, entry: Any) -> Image:
        """From the image side's ImageEntry (``.squashfs``, ``.metadata``, ``.key``)."""
        return cls(Path(entry.squashfs), ImageConfig.from_file(Path(entry.metadata)),
                   getattr(entry, "key", ""))

    @classmethod
    def from_squashfs(cls, path: Path) -> Image:
        """A squashfs file, with its config from ``<name>.json`` beside it if present."""
        meta = path.with_suffix(".json")
        config = ImageConfig.from_file(meta) if meta.exists() else ImageConfig()
        return cls(path, config, str(path))


class ImageConfig(NamedTuple):
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ImageConfig:
        """From metadata JSON (keys entrypoint, cmd, env, workdir, labels; OCI names too)."""
        def get(*keys: str) -> Any:
            for k in keys:
                if data.get(k) is not None:
                    return data[k]
            return None

        env_raw = get("env", "Env") or []
        if isinstance(env_raw, Mapping):
            env = tuple((str(k), str(v)) for k, v in env_raw.items())
        else:
            env = tuple((e.partition("=")[0], e.partition("=")[2]) for e in env_raw)
        labels = get("labels", "Labels") or {}
        return cls(
            entrypoint=tuple(get("entrypoint", "Entrypoint") or ()),
            cmd=tuple(get("cmd", "Cmd") or ()),
            env=env,
            workdir=get("workdir", "WorkingDir") or "/",
            labels=tuple((str(k), str(v)) for k, v in labels.items()),
        )

    @classmethod
    def from_file(cls, path: Path) -> ImageConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read image metadata {path}: {exc}") from exc
        if isinstance(data.get("config"), Mapping):  # a raw OCI image config
            data = data["config"]
        return cls.from_mapping(data)


def process_args(image: ImageConfig, args: Sequence[str], entrypoint: str | None) -> list[str]:
    """The container's argv. ``entrypoint`` None: image's; "": none; else replaces it, split
    into words at blanks as Sarus does (``--entrypoint "echo hello"``; no quoting)."""
    if entrypoint is None:
        ep: list[str] = list(image.entrypoint)
        cmd = list(args) if args else list(image.cmd)
    else:
        ep = entrypoint.split()
        cmd = list(args)
    argv = ep + cmd
    if not argv:
        raise InvalidInput("no command to run: the image has no entrypoint or cmd and none "
                           "was given after the image")
    return argv


def check_env_name(name: str, where: str) -> str:
    """``name`` if it is a valid variable name, else InvalidInput naming ``where``."""
    if not name or not _NAME.match(name):
        raise InvalidInput(f"invalid environment variable name {name!r} in {where}")
    return name


def parse_env_option(text: str) -> tuple[str, str | None]:
    """``-e NAME=VALUE`` -> (NAME, VALUE); ``-e NAME`` -> (NAME, None)."""
    name, sep, value = text.partition("=")
    check_env_name(name, f"-e {text!r}")
    return name, (value if sep else None)


def cuda_renumber(value: str) -> str:
    """``CUDA_VISIBLE_DEVICES=2,5`` on the host becomes ``0,1`` in the container."""
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return ",".join(str(i) for i in range(len(ids)))


def _edit(env: dict[str, str], name: str, value: str, where: str) -> None:
    old = env.get(name)
    if where == "prepend":
        env[name] = value + (":" + old if old else "")
    else:
        env[name] = (old + ":" if old else "") + value


def merge_environment(host: Mapping[str, str], image: ImageConfig, *,
                      site_set: Sequence[tuple[str, str]] = (),
                      site_prepend: Sequence[tuple[str, str]] = (),
                      site_append: Sequence[tuple[str, str]] = (),
                      site_unset: Sequence[str] = (),
                      user: Sequence[tuple[str, str | None]] = (),
                      clean: bool = False) -> dict[str, str]:
    """The container's environment (see the module docstring for the order)."""
    env = {} if clean else dict(host)
    env.update(image.env)
    for name, value in site_set:
        env[name] = value
    for name, value in site_prepend:
        _edit(env, name, value, "prepend")
    for name, value in site_append:
        _edit(env, name, value, "append")
    for name in site_unset:
        env.pop(name, None)
    for name, given in user:
        if given is None:
            if name in host:
                env[name] = host[name]
        else:
            env[name] = given
    cuda = host.get("CUDA_VISIBLE_DEVICES")
    if cuda and "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"] == cuda:
        env["NVIDIA_VISIBLE_DEVICES"] = cuda
        env["CUDA_VISIBLE_DEVICES"] = cuda_renumber(cuda)
    return env


def parse_annotation(text: str) -> tuple[str, str]:
    """``--annotation KEY=VALUE`` -> (KEY, VALUE); ``KEY`` alone gives an empty value, as in
    Sarus."""
    key, _, value = text.partition("=")
    if not key:
        raise InvalidInput(f"invalid annotation {text!r}: the key is empty (expected "
                           "KEY[=VALUE])")
    return key, value


def merge_annotations(*, mpi: bool = False, mpi_type: str | None = None,
                default_mpi_type: str | None = None, glibc: bool = False, ssh: bool = False,
                sync: bool = False, log_level: str | None = None,
                labels: Sequence[tuple[str, str]] = (),
                user: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """OCI annotations in rising precedence: the engine's, image labels, ``--annotation``."""
    out: dict[str, str] = {}
    if mpi or mpi_type:
        out["com.hooks.mpi.enabled"] = "true"
        kind = mpi_type or default_mpi_type
        if kind:
            out["com.hooks.mpi.type"] = kind
    if glibc:
        out["com.hooks.glibc.enabled"] = "true"
    if ssh:
        out["com.hooks.ssh.enabled"] = "true"
        out["com.hooks.slurm-global-sync.enabled"] = "true"
    if sync:
        out["com.hooks.slurm-global-sync.enabled"] = "true"
    if log_level:
        out["com.hooks.logging.level"] = log_level
    out.update(labels)
    out.update(user)
    return out
