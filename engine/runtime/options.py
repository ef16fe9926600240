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
* :func:`merge_environment` merges, in this order (Sarus 1.6.3's ``ConfigsMerger``): host
  (nothing with ``clean_env``), image (less its ``PMIX_*``: the host's PMIx server is the one
  the task talks to), the GPU variables (:func:`gpu_environment`), ``TINI_SUBREAPER=1`` with
  ``--init``, site set/prepend/append/unset, ``-e``. ``-e NAME`` copies the host value
  (ignored if unset) over the image's and the site's, also with ``clean_env``; ``-e NAME=``
  sets it empty.
* :func:`uncoerced_environ` undoes Python's locale coercion (PEP 538) in the host environment.
* :func:`merge_annotations` layers the engine's own, then image labels, then ``--annotation``.

Nothing here touches the system; bad input raises :class:`~hpc_exec.errors.InvalidInput`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.errors import InvalidInput
from hpc_exec.mountspec import Device, Mount

__all__ = ["Image", "ImageConfig", "RunOptions", "check_env_name", "cuda_renumber",
           "effective_pid", "gpu_environment", "log_level_number", "merge_annotations",
           "merge_environment", "parse_annotation", "parse_env_option", "process_args",
           "uncoerced_environ"]

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
    pid: str | None = None  # --pid host|private; None: host, or private with --ssh
    mpi: bool = False  # --mpi
    mpi_type: str | None = None  # --mpi-type
    glibc: bool = False  # --glibc
    ssh: bool = False  # --ssh
    sync: bool = False  # --sync
    annotations: tuple[tuple[str, str], ...] = ()  # --annotation KEY=VALUE
    tty: bool = False  # --tty
    log_level: str | None = None  # the global --debug: "debug"; else None
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
    """A host ``CUDA_VISIBLE_DEVICES`` as the container sees it: each id becomes its rank among
    the sorted ids, so the order is kept (``3,1,5`` -> ``1,0,2``, ``2,5`` -> ``0,1``). The
    container has only the granted GPUs, numbered from 0 in host order. Integer ids sort as
    numbers (Sarus sorts text, so ``2,10`` would give ``1,0``); other ids (``GPU-<uuid>``,
    MIG) as text."""
    ids = [v.strip() for v in value.split(",") if v.strip()]
    if all(i.isdecimal() for i in ids):
        ranked = sorted(set(ids), key=int)
    else:
        ranked = sorted(set(ids))
    rank = {v: str(n) for n, v in enumerate(ranked)}
    return ",".join(rank[i] for i in ids)


# What the NVIDIA container toolkit reads to pick GPUs and driver parts (CUDA_VERSION alone
# makes a pre-v2 image ask for every GPU); an image sets them for a workstation, not for the
# allocation the workload manager made.
GPU_VARIABLES = ("CUDA_VERSION", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES")


def gpu_environment(host: Mapping[str, str], env: dict[str, str]) -> None:
    """Make ``env`` follow the host's GPU allocation, as Sarus does (its ConfigsMerger).

    A host ``CUDA_VISIBLE_DEVICES`` (Slurm's GRES plugin sets it) wins over the image:
    ``NVIDIA_VISIBLE_DEVICES`` becomes the host ids, ``CUDA_VISIBLE_DEVICES`` their container
    numbering (:func:`cuda_renumber`), and ``NVIDIA_DRIVER_CAPABILITIES=all`` is added when
    the image has none. Without one (unset, empty, or ``NoDevFiles``: no GPU granted) the
    image's :data:`GPU_VARIABLES` are removed, so an image's ``NVIDIA_VISIBLE_DEVICES=all``
    cannot grant every GPU of the node."""
    granted = host.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not granted or granted == "NoDevFiles":
        for name in GPU_VARIABLES:
            env.pop(name, None)
        return
    env["NVIDIA_VISIBLE_DEVICES"] = granted
    env.setdefault("NVIDIA_DRIVER_CAPABILITIES", "all")
    env["CUDA_VISIBLE_DEVICES"] = cuda_renumber(granted)


# Python (PEP 538) sets LC_CTYPE to one of these when it starts under the C locale, in its
# own environment, which the engine's process would then hand to the container.
_COERCED_LC_CTYPE = ("C.UTF-8", "C.utf8", "UTF-8")


def uncoerced_environ(environ: Mapping[str, str],
                      initial: Callable[[], bytes]) -> Mapping[str, str]:
    """``environ`` without what Python's locale coercion added: when ``LC_CTYPE`` holds a
    coercion value and ``LC_ALL`` is unset (coercion never happens otherwise), ``initial()``
    (the environment the process started with, ``/proc/self/environ``) says what ``LC_CTYPE``
    was: absent (dropped) or another value (restored). Returns ``environ`` itself when there
    is nothing to undo, without calling ``initial``."""
    if environ.get("LC_CTYPE") not in _COERCED_LC_CTYPE or "LC_ALL" in environ:
        return environ
    try:
        block = initial()
    except OSError:
        return environ
    original = None
    for entry in block.split(b"\0"):
        if entry.startswith(b"LC_CTYPE="):
            original = entry[len(b"LC_CTYPE="):].decode("utf-8", "surrogateescape")
    if original == environ["LC_CTYPE"]:
        return environ
    out = dict(environ)
    if original is None:
        del out["LC_CTYPE"]
    else:
        out["LC_CTYPE"] = original
    return out


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
                      clean: bool = False, init: bool = False) -> dict[str, str]:
    """The container's environment (see the module docstring for the order)."""
    env = {} if clean else dict(host)
    env.update((k, v) for k, v in image.env if not k.startswith("PMIX_"))
    gpu_environment(host, env)  # the allocation holds with clean too
    if init:
        env["TINI_SUBREAPER"] = "1"  # tini reaps orphans when it is not PID 1 (--pid=host)
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
    return env


def effective_pid(options: RunOptions) -> str:
    """``host`` or ``private``: ``--pid``, else private with ``--ssh`` (the SSH hook needs a
    PID namespace of the container's own to end its daemon), else host. ``--ssh --pid=host``
    is InvalidInput, as in Sarus."""
    pid = options.pid
    if pid is not None and pid not in ("host", "private"):
        raise InvalidInput(f"invalid --pid {pid!r} (expected host or private)")
    if options.ssh:
        if pid == "host":
            raise InvalidInput("--ssh cannot be used with --pid=host: the SSH hook needs a "
                               "private PID namespace (--ssh implies --pid=private)")
        return "private"
    return pid or "host"


def parse_annotation(text: str) -> tuple[str, str]:
    """``--annotation KEY=VALUE`` -> (KEY, VALUE); ``KEY`` alone gives an empty value, as in
    Sarus."""
    key, _, value = text.partition("=")
    if not key:
        raise InvalidInput(f"invalid annotation {text!r}: the key is empty (expected "
                           "KEY[=VALUE])")
    return key, value


# Sarus's log levels (common::LogLevel): hooks written for Sarus parse the number.
_LOG_LEVELS = {"debug": "0", "info": "1", None: "2"}  # None: Sarus's default, WARN


def log_level_number(log_level: str | None) -> str:
    """``com.hooks.logging.level`` for the engine's level: 0 debug, 1 info, 2 warn."""
    return _LOG_LEVELS.get(log_level, "2")


def merge_annotations(*, mpi: bool = False, mpi_type: str | None = None,
                      default_mpi_type: str | None = None, glibc: bool = False,
                      ssh: bool = False, sync: bool = False, log_level: str | None = None,
                      labels: Sequence[tuple[str, str]] = (),
                      user: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """OCI annotations in rising precedence: the engine's, image labels, ``--annotation``.

    As Sarus: ``--mpi`` enables the glibc hook too (MPI libraries from the host need a glibc
    at least as new as theirs), and ``com.hooks.logging.level`` is always set, as a number."""
    out: dict[str, str] = {}
    if mpi or mpi_type:
        out["com.hooks.mpi.enabled"] = "true"
        out["com.hooks.glibc.enabled"] = "true"
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
    out["com.hooks.logging.level"] = log_level_number(log_level)
    out.update(labels)
    out.update(user)
    return out
