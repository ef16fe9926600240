"""``hpc-exec-apptainer`` (also ``hpc-exec apptainer``): the apptainer command line, run by our
engine.

Snakemake 9.27 runs every containerised command as ``apptainer exec ... IMAGE bash -c CMD``
and pulls images with ``apptainer pull --name NAME URL``. Put this program first on ``PATH``
under the name ``apptainer`` and stock Snakemake (``--sdm apptainer``, any executor) runs those
commands in OCI images from our squashfs cache, without Apptainer (docs/apptainer-frontend.md).

Contract:

* Global options before the command: ``--quiet/-q``, ``--silent/-s``, ``--debug/-d``,
  ``--verbose/-v``, ``--nocolor``, ``--version`` (prints ``apptainer version 1.3.6-hpc-exec``;
  Snakemake needs >= 1.0), ``--help/-h``. Commands: ``version``, ``pull``, ``exec``.
* ``pull [--name NAME] [--dir DIR] [--force/-F] [NAME] docker://REF``: pulls REF once into the
  shared cache through :func:`hpc_exec.engine.pull` (the engine locks, so concurrent pulls of
  one image download it once; inside a Slurm job an image already in the cache is used
  without asking the registry, since the submit host pulled it), then writes NAME (relative
  to the cwd, or to ``--dir``) as a small JSON *descriptor* naming the image and its digest,
  atomically (temp file + ``os.replace``). Replacing an existing descriptor is always allowed
  (concurrent jobs pull the same NAME); replacing any other file needs ``--force``, as in
  apptainer.
* ``exec [options] IMAGE CMD [ARG...]``: runs CMD in IMAGE. Options, as in apptainer:
  ``--bind/-B SRC[:DST[:ro|rw]]`` (comma-separated lists too; a relative SRC is taken from the
  cwd), ``--home/-H SRC[:DST]`` (bind SRC at DST and set HOME=DST; default: the caller's
  ``$HOME``), ``--no-home``, ``--pwd DIR``, ``--env K=V`` (several pairs separated by commas
  when there is more than one ``=``, as apptainer's flag parser does), ``--cleanenv/-e``,
  ``--contain/-c``, ``--containall/-C`` (contain, cleanenv and a private PID namespace),
  ``--nv``, ``--writable-tmpfs`` (accepted: the rootfs already is a writable overlay on tmpfs).
  Host variables ``APPTAINERENV_K=V`` and ``SINGULARITYENV_K=V`` set K in the container;
  ``APPTAINER_BIND``/``SINGULARITY_BIND`` (and ``*_BINDPATH``) add binds as ``--bind`` does.
  Any other ``APPTAINER_*``/``SINGULARITY_*`` setting that matters to real apptainer's exec
  gets a one-line note that it is ignored.
* Unless ``--contain``: the caller's cwd, its home and its temp dir (``$TMPDIR``, else
  ``/tmp``) are bound at the same paths (system directories such as ``/`` or ``/usr`` never
  are). The workdir in the container is ``--pwd``, else the cwd. The image's ENTRYPOINT and
  WORKDIR are ignored, as apptainer ignores them for ``exec``.
* IMAGE is recognised by content: a descriptor written by ``pull``, a squashfs file (magic
  ``hsqs``), or a ``docker://`` (or ``oras://``) reference (pulled if missing). A real SIF
  file, a sandbox directory or another URL scheme is a one-line error.
* ``bash -c CMD`` (what Snakemake asks for) runs through ``/bin/sh``: bash if the image has
  it, else the image's ``/bin/sh`` with a one-line note on stderr (not with ``--quiet``).
* With ``HPC_EXEC_APPTAINER_NTASKS=N`` (N > 1; set by the hpc-container executor for rules
  with ``tasks > 1`` or ``mpi``) the command runs as ``srun --ntasks=N --kill-on-bad-exit=1
  python -m hpc_exec run --sync ...``: one container per task, started together through the
  global-sync barrier; srun's status is returned. Otherwise the container runs in this process
  (:func:`hpc_exec.engine.execute`) and its exit status is returned.
* Errors are one line on stderr, ``hpc-exec apptainer: MESSAGE``, with the exit code of their
  class (docs/exit-codes.md); an option we do not implement is never ignored:
  ``hpc-exec apptainer: unsupported option --foo`` (exit 110).

Importing this module costs argparse only; the engine loads inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from hpc_exec.mountspec import Mount

__all__ = ["APPTAINER_VERSION", "BASH_FALLBACK", "BASH_FALLBACK_QUIET", "BIND_VARIABLES",
           "DEFAULT_PATH", "DESCRIPTOR_FORMAT", "NTASKS_VARIABLE", "ExecPlan", "ExecRequest",
           "GlobalOptions", "Invocation", "PullRequest", "add_parser", "descriptor_text",
           "exec_plan", "image_kind", "main", "parse_argv", "parse_bind", "parse_env", "run",
           "wrap_command"]

APPTAINER_VERSION = "1.3.6-hpc-exec"
DESCRIPTOR_FORMAT = "hpc-exec-apptainer-image"
NTASKS_VARIABLE = "HPC_EXEC_APPTAINER_NTASKS"
PROG = "hpc-exec apptainer"

# Runs ``bash "$@"`` if the image has bash, else ``/bin/sh "$@"`` after a note on stderr.
# Called as ``/bin/sh -c BASH_FALLBACK sh -c CMD [ARG...]``: $0 is "sh" and "$@" is
# ``-c CMD [ARG...]``, so either shell gets exactly the arguments Snakemake gave bash.
BASH_FALLBACK = ('if command -v bash >/dev/null 2>&1; then exec bash "$@"; fi; '
                 'echo "hpc-exec: no bash in this image, running the command with /bin/sh" '
                 '>&2; exec /bin/sh "$@"')
BASH_FALLBACK_QUIET = ('if command -v bash >/dev/null 2>&1; then exec bash "$@"; fi; '
                       'exec /bin/sh "$@"')

# Apptainer's environment form of --bind (comma lists, as the flag).
BIND_VARIABLES = ("APPTAINER_BINDPATH", "SINGULARITY_BINDPATH", "APPTAINER_BIND",
                  "SINGULARITY_BIND")
# Other APPTAINER_*/SINGULARITY_* variables that change nothing an exec does here (cache and
# temp dirs of real apptainer's builds; what apptainer sets inside its own containers). Any
# other one gets a note that it is ignored.
_IGNORED_SETTINGS = frozenset({"CACHEDIR", "TMPDIR", "PULLFOLDER", "CONTAINER", "NAME",
                               "COMMAND", "ENVIRONMENT", "APPNAME", "NOHTTPS"})

# Apptainer's default PATH, for a clean environment when the image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Host directories never bound as cwd, home or temp dir: they would hide the image's own.
_SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/sbin", "/sys", "/usr")

_SIF_MAGIC = b"SIF_MAGIC"
_SQUASHFS_MAGIC = b"hsqs"
_SINGULARITY_SHEBANG = b"#!/usr/bin/env run-singularity"
# Apptainer's image sources without "://" (all unsupported here).
_OTHER_SCHEMES = ("docker-archive:", "docker-daemon:", "oci-archive:", "oci:")
_HEAD = 65536  # bytes read to recognise an image file (a descriptor is far smaller)


# ---------------------------------------------------------------------------------------------
# Parsing (pure)


class Say(Protocol):
    def __call__(self, message: str, *, warning: bool = False) -> None: ...


class _Opt(NamedTuple):
    key: str
    takes_value: bool


_GLOBAL: dict[str, _Opt] = {
    "--quiet": _Opt("quiet", False), "-q": _Opt("quiet", False),
    "--silent": _Opt("silent", False), "-s": _Opt("silent", False),
    "--debug": _Opt("debug", False), "-d": _Opt("debug", False),
    "--verbose": _Opt("verbose", False), "-v": _Opt("verbose", False),
    "--nocolor": _Opt("nocolor", False),
    "--version": _Opt("version", False),
    "--help": _Opt("help", False), "-h": _Opt("help", False),
}

_EXEC: dict[str, _Opt] = {
    "--bind": _Opt("bind", True), "-B": _Opt("bind", True),
    "--home": _Opt("home", True), "-H": _Opt("home", True),
    "--no-home": _Opt("no_home", False),
    "--pwd": _Opt("pwd", True),
    "--env": _Opt("env", True),
    "--cleanenv": _Opt("cleanenv", False), "-e": _Opt("cleanenv", False),
    "--contain": _Opt("contain", False), "-c": _Opt("contain", False),
    "--containall": _Opt("containall", False), "-C": _Opt("containall", False),
    "--nv": _Opt("nv", False),
    "--writable-tmpfs": _Opt("writable_tmpfs", False),
    "--help": _Opt("help", False), "-h": _Opt("help", False),
}

_PULL: dict[str, _Opt] = {
    "--name": _Opt("name", True),
    "--dir": _Opt("dir", True),
    "--force": _Opt("force", False), "-F": _Opt("force", False),
    "--help": _Opt("help", False), "-h": _Opt("help", False),
}

_TRUE = ("", "true", "1", "t", "True", "TRUE")
_FALSE = ("false", "0", "f", "False", "FALSE")


def _invalid(message: str) -> Exception:
    from hpc_exec.errors import InvalidInput

    return InvalidInput(message)


def _parse_options(argv: Sequence[str], table: Mapping[str, _Opt]
                   ) -> tuple[dict[str, Any], list[str]]:
    """Options in front of the first operand, as apptainer's flag parser (pflag) reads them.

    ``--name VALUE``, ``--name=VALUE``, ``-X VALUE``, ``-XVALUE``, ``-X=VALUE`` and combined
    short flags (``-ce``) are accepted; ``--`` ends the options. Values of repeated options
    are collected in order. Returns (options, operands).
    """
    opts: dict[str, Any] = {}
    i = 0

    def store(opt: _Opt, value: str | None, spelling: str) -> None:
        if opt.takes_value:
            opts.setdefault(opt.key, []).append(value)
        elif value is None or value in _TRUE:
            opts[opt.key] = True
        elif value in _FALSE:
            opts[opt.key] = False
        else:
            raise _invalid(f"invalid value {value!r} for {spelling} (true or false)")

    def value_of(spelling: str) -> str:
        nonlocal i
        if i + 1 >= len(argv):
            raise _invalid(f"option {spelling} needs a value")
        i += 1
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return opts, list(argv[i + 1:])
        if not arg.startswith("-") or arg == "-":
            return opts, list(argv[i:])
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            opt = table.get(name)
            if opt is None:
                raise _invalid(f"unsupported option {name}")
            if opt.takes_value:
                store(opt, inline if eq else value_of(name), name)
            else:
                store(opt, inline if eq else None, name)
        else:
            letters = arg[1:]
            j = 0
            while j < len(letters):
                spelling = "-" + letters[j]
                opt = table.get(spelling)
                if opt is None:
                    raise _invalid(f"unsupported option {spelling}")
                rest = letters[j + 1:]
                if opt.takes_value:
                    if rest:
                        store(opt, rest.removeprefix("="), spelling)
                    else:
                        store(opt, value_of(spelling), spelling)
                    break
                if rest.startswith("="):
                    store(opt, rest[1:], spelling)
                    break
                store(opt, None, spelling)
                j += 1
        i += 1
    return opts, []


class GlobalOptions(NamedTuple):
    quiet: bool = False
    silent: bool = False
    debug: bool = False
    verbose: bool = False


class ExecRequest(NamedTuple):
    """``exec``'s command line, parsed (values as given; paths not yet resolved)."""

    image: str
    command: tuple[str, ...]
    binds: tuple[str, ...] = ()  # --bind values, each maybe a comma list
    home: str | None = None
    no_home: bool = False
    pwd: str | None = None
    env: tuple[str, ...] = ()  # --env values, each maybe a comma list
    cleanenv: bool = False
    contain: bool = False
    containall: bool = False
    nv: bool = False
    writable_tmpfs: bool = False


class PullRequest(NamedTuple):
    uri: str
    name: str | None = None
    dir: str | None = None
    force: bool = False


class Invocation(NamedTuple):
    """What to do: ``command`` is "version", "help", "pull" or "exec"."""

    options: GlobalOptions
    command: str
    request: ExecRequest | PullRequest | None = None


def parse_argv(argv: Sequence[str]) -> Invocation:
    """The invocation ``argv`` (without the program name) asks for; InvalidInput if bad."""
    gopts, rest = _parse_options(argv, _GLOBAL)
    options = GlobalOptions(**{k: bool(gopts.get(k, False)) for k in GlobalOptions._fields})
    if gopts.get("version"):
        return Invocation(options, "version")
    if gopts.get("help") or not rest:
        return Invocation(options, "help")
    command, args = rest[0], rest[1:]
    if command == "version":
        return Invocation(options, "version")
    if command == "help":
        return Invocation(options, "help")
    if command == "exec":
        opts, operands = _parse_options(args, _EXEC)
        if opts.get("help"):
            return Invocation(options, "help-exec")
        if len(operands) < 2:
            raise _invalid("exec needs IMAGE and a command (exec [options] IMAGE CMD [ARG...])")
        homes = opts.get("home", [])
        pwds = opts.get("pwd", [])
        return Invocation(options, "exec", ExecRequest(
            image=operands[0], command=tuple(operands[1:]),
            binds=tuple(opts.get("bind", [])),
            home=homes[-1] if homes else None, no_home=bool(opts.get("no_home")),
            pwd=pwds[-1] if pwds else None, env=tuple(opts.get("env", [])),
            cleanenv=bool(opts.get("cleanenv")), contain=bool(opts.get("contain")),
            containall=bool(opts.get("containall")), nv=bool(opts.get("nv")),
            writable_tmpfs=bool(opts.get("writable_tmpfs"))))
    if command == "pull":
        opts, operands = _parse_options(args, _PULL)
        if opts.get("help"):
            return Invocation(options, "help-pull")
        names = opts.get("name", [])
        dirs = opts.get("dir", [])
        name = names[-1] if names else None
        if len(operands) == 2 and name is None:
            name, operands = operands[0], operands[1:]
        if len(operands) != 1:
            raise _invalid("pull needs one URI (pull [--name NAME] [NAME] docker://REF)")
        return Invocation(options, "pull", PullRequest(
            uri=operands[0], name=name, dir=dirs[-1] if dirs else None,
            force=bool(opts.get("force"))))
    raise _invalid(f"unsupported command {command!r} (supported: exec, pull, version)")


def parse_bind(text: str, cwd: str) -> list[tuple[str, str, bool]]:
    """``--bind`` text: ``SRC[:DST[:ro|rw]]``, several separated by commas.

    Returns ``(source, destination, readonly)`` triples; a relative SRC is taken from ``cwd``;
    DST must be absolute.
    """
    binds: list[tuple[str, str, bool]] = []
    for item in text.split(","):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 3 or not parts[0]:
            raise _invalid(f"invalid bind {item!r} (expected SRC[:DST[:ro|rw]])")
        readonly = False
        if len(parts) == 3:
            if parts[2] not in ("ro", "rw"):
                raise _invalid(f"unsupported bind option {parts[2]!r} in {item!r} "
                               "(ro or rw)")
            readonly = parts[2] == "ro"
        source = os.path.normpath(os.path.join(cwd, parts[0]))
        destination = parts[1] if len(parts) > 1 and parts[1] else source
        if not destination.startswith("/"):
            raise _invalid(f"bind destination {destination!r} in {item!r} must be an "
                           "absolute path")
        binds.append((source, os.path.normpath(destination), readonly))
    return binds


def parse_env(text: str) -> list[tuple[str, str]]:
    """``--env`` text: ``K=V``, or with more than one ``=`` a CSV list ``K=V,K2=V2``.

    This is apptainer's (pflag's StringToString) rule: with exactly one ``=`` the whole text
    is one pair, so a value may hold commas.
    """
    count = text.count("=")
    if count == 0:
        raise _invalid(f"invalid --env {text!r} (expected NAME=VALUE)")
    if count == 1:
        items = [text.strip('"')]
    else:
        import csv

        try:
            items = next(csv.reader([text]))
        except (csv.Error, StopIteration) as exc:
            raise _invalid(f"invalid --env {text!r} (expected NAME=VALUE[,NAME=VALUE...])"
                           ) from exc
    import re

    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise _invalid(f"invalid --env entry {item!r} in {text!r} (expected NAME=VALUE)")
        pairs.append((name, value))
    return pairs


def wrap_command(command: Sequence[str], *, quiet: bool = False) -> tuple[str, ...]:
    """``bash -c CMD ...`` as a command that falls back to ``/bin/sh`` without bash."""
    if len(command) >= 2 and command[0] == "bash" and command[1] == "-c":
        script = BASH_FALLBACK_QUIET if quiet else BASH_FALLBACK
        return ("/bin/sh", "-c", script, "sh", *command[1:])
    return tuple(command)


def _bindable(path: str) -> bool:
    """Whether a cwd, home or temp dir may be bound at its own path (not a system dir)."""
    if path == "/" or not path.startswith("/"):
        return False
    return not any(path == d or path.startswith(d + "/") for d in _SYSTEM_DIRS)


def _covered(path: str, mounts: Sequence[tuple[str, str, bool]]) -> bool:
    return any(path == dst or path.startswith(dst.rstrip("/") + "/") for _, dst, _ in mounts)


class ExecPlan(NamedTuple):
    """What one ``exec`` asks of the engine, as typed values (see :func:`exec_plan`)."""

    command: tuple[str, ...]
    mounts: tuple[Mount, ...]
    env: tuple[tuple[str, str | None], ...]  # (NAME, VALUE) sets; (NAME, None) copies the host's
    clean_env: bool
    workdir: str
    pid: str
    notes: tuple[str, ...]  # warnings to print once


def exec_plan(request: ExecRequest, *, cwd: str, environ: Mapping[str, str],
              quiet: bool = False, is_dir: Callable[[str], bool] = os.path.isdir,
              exists: Callable[[str], bool] = os.path.exists,
              forbidden: Callable[[str], bool] = lambda path: False) -> ExecPlan:
    """The engine options for ``request`` run from ``cwd`` with host environment ``environ``.

    Pure apart from ``is_dir``/``exists`` (which tell which host directories and GPU device
    nodes exist; tests pass fakes). ``forbidden(path)`` says whether the site's
    ``userMounts`` rules refuse ``path`` as a destination: the implicit temp-dir bind is then
    left out with a note (the cwd and home binds are not: the engine refuses them loudly).
    """
    from hpc_exec.mountspec import bind

    contain = request.contain or request.containall
    notes: list[str] = []
    implicit: list[tuple[str, str, bool]] = []
    env: list[tuple[str, str | None]] = []

    # HOME: --home SRC[:DST] is bound even with --contain (as apptainer does); the default home
    # ($HOME) only without --contain and --no-home.
    if request.home is not None:
        src, _, dst = request.home.partition(":")
        if not src:
            raise _invalid(f"invalid --home {request.home!r} (expected SRC[:DST])")
        src = os.path.normpath(os.path.join(cwd, src))
        dst = os.path.normpath(dst) if dst else src
        if not dst.startswith("/"):
            raise _invalid(f"--home destination {dst!r} must be an absolute path")
        home = dst
        implicit.append((src, dst, False))
    else:
        home = environ.get("HOME") or "/"
        if not contain and not request.no_home and _bindable(home) and is_dir(home):
            implicit.append((home, home, False))
    if not contain:
        if _bindable(cwd):
            implicit.append((cwd, cwd, False))
        tmp = os.path.normpath(environ.get("TMPDIR") or "/tmp")
        if _bindable(tmp) and is_dir(tmp) and not _covered(tmp, implicit):
            if forbidden(tmp):
                notes.append(f"not binding the temp dir {tmp}: the site's userMounts rules "
                             "forbid it as a mount destination")
            else:
                implicit.append((tmp, tmp, False))

    user: list[tuple[str, str, bool]] = []
    for name in BIND_VARIABLES:  # apptainer's environment form of --bind, before the flags
        if environ.get(name):
            user += parse_bind(environ[name], cwd)
    for text in request.binds:
        user += parse_bind(text, cwd)
    for name in sorted(environ):
        if name.startswith(("APPTAINER_", "SINGULARITY_")) and \
                name.partition("_")[2] not in _IGNORED_SETTINGS and name not in BIND_VARIABLES:
            notes.append(f"ignoring {name}: hpc-exec apptainer does not implement it")
    # One mount per destination, the user's winning; parents before children.
    by_dst: dict[str, tuple[str, str, bool]] = {}
    for item in [*implicit, *user]:
        by_dst[item[1]] = item
    ordered = sorted(by_dst.values(), key=lambda m: m[1].count("/"))
    mounts = tuple(bind(s, d, readonly=ro) for s, d, ro in ordered)

    # Environment: APPTAINERENV_/SINGULARITYENV_ from the host, then --env, then HOME.
    sets: dict[str, str] = {}
    for prefix in ("SINGULARITYENV_", "APPTAINERENV_"):
        for key, value in environ.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                sets[key[len(prefix):]] = value
    for text in request.env:
        sets.update(parse_env(text))
    sets.pop("HOME", None)  # apptainer does not let --env override HOME either
    if request.nv:
        # The engine maps the host's CUDA_VISIBLE_DEVICES to NVIDIA_VISIBLE_DEVICES (renumbered)
        # and the site's NVIDIA hook binds driver and devices; --nv makes sure the selection
        # reaches the container even with --cleanenv, and selects every GPU outside Slurm.
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"):
            if name in environ and name not in sets:
                env.append((name, None))
        if "CUDA_VISIBLE_DEVICES" not in environ and "NVIDIA_VISIBLE_DEVICES" not in sets:
            if exists("/dev/nvidiactl"):
                sets["NVIDIA_VISIBLE_DEVICES"] = "all"
            else:
                notes.append("--nv: no NVIDIA GPU on this host (no /dev/nvidiactl), "
                             "continuing without")
    env += list(sets.items())
    env.append(("HOME", home))
    clean_env = request.cleanenv or request.containall
    if clean_env:
        # Apptainer's default PATH; _exec drops it when the image sets its own PATH.
        env.insert(0, ("PATH", DEFAULT_PATH))

    if request.pwd is not None:
        workdir = os.path.normpath(os.path.join(cwd, request.pwd))
    elif not contain or _covered(cwd, ordered):
        workdir = cwd
    else:
        workdir = home
    return ExecPlan(command=wrap_command(request.command, quiet=quiet), mounts=mounts,
                    env=tuple(env), clean_env=clean_env, workdir=workdir,
                    pid="private" if request.containall else "host", notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Images


def image_kind(head: bytes) -> str:
    """What the first bytes of an IMAGE file say it is: "squashfs", "descriptor", "sif",
    or "unknown"."""
    if head.startswith(_SQUASHFS_MAGIC):
        return "squashfs"
    if _SIF_MAGIC in head[:128] or head.startswith(_SINGULARITY_SHEBANG):
        return "sif"
    if head.lstrip().startswith(b"{") and DESCRIPTOR_FORMAT.encode() in head:
        return "descriptor"
    return "unknown"


def descriptor_text(url: str, entry: Any) -> str:
    """The JSON a ``pull --name`` writes for ``entry`` (an ImageEntry) pulled from ``url``."""
    import json

    return json.dumps({
        "format": DESCRIPTOR_FORMAT, "version": 1, "url": url, "reference": entry.key,
        "digest": entry.digest,
        "pinned": f"{entry.server}/{entry.repository}@{entry.digest}",
    }, indent=1) + "\n"


def _read_descriptor(path: str, head: bytes) -> str:
    """The pinned reference (``server/repository@digest``) a descriptor names."""
    import json

    try:
        data = json.loads(head.decode())
        if data.get("format") != DESCRIPTOR_FORMAT or data.get("version") != 1:
            raise ValueError("not a version 1 descriptor")
        pinned = data["pinned"]
        if not isinstance(pinned, str) or "@" not in pinned:
            raise ValueError("bad 'pinned' field")
        return pinned
    except (ValueError, KeyError, UnicodeDecodeError, AttributeError) as exc:
        raise _invalid(f"image descriptor {path} is damaged ({exc}); delete it and pull "
                       "again") from exc


def _reference(uri: str) -> str:
    """The engine reference of a ``docker://`` or ``oras://`` URI (InvalidInput otherwise)."""
    for scheme in ("docker://", "oras://"):
        if uri.startswith(scheme):
            if not uri[len(scheme):]:
                raise _invalid(f"empty image reference in {uri!r}")
            # the engine reads both schemes as registry references
            return uri[len(scheme):] if scheme == "docker://" else uri
    if "://" in uri or uri.startswith(_OTHER_SCHEMES):
        raise _invalid(f"unsupported image URI {uri!r}: hpc-exec apptainer pulls only "
                       "docker:// (and oras://) references (for SIF images use real apptainer)")
    raise _invalid(f"unsupported image URI {uri!r} (expected docker://[server/]name[:tag])")


def _cached_or_pulled(ref: str, say: Say) -> Any:
    """The engine Image of ``ref``: from the cache, else pulled through the engine first."""
    from hpc_exec import engine
    from hpc_exec.errors import ImageNotFound

    try:
        return engine.resolve(ref)
    except ImageNotFound:
        say(f"pulling {ref} into the image cache")
        engine.pull(ref)
        return engine.resolve(ref)


def _resolve_image(image: str, cwd: str, say: Say) -> Any:
    """The engine Image of exec's IMAGE operand (see the module docstring)."""
    from pathlib import Path

    from hpc_exec import engine

    if "://" in image or image.startswith(_OTHER_SCHEMES):
        ref = _reference(image)
        return _cached_or_pulled(ref, say)
    path = os.path.normpath(os.path.join(cwd, image))
    if os.path.isdir(path):
        raise _invalid(f"image {image!r} is a directory: sandbox images need real apptainer")
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except FileNotFoundError as exc:
        from hpc_exec.errors import ImageNotFound

        raise ImageNotFound(f"image file {image!r} not found") from exc
    except OSError as exc:
        raise _invalid(f"cannot read image {image!r}: {exc.strerror}") from exc
    kind = image_kind(head)
    if kind == "squashfs":
        return engine.resolve(Path(path))
    if kind == "descriptor":
        pinned = _read_descriptor(path, head)
        return _cached_or_pulled(pinned, say)
    if kind == "sif":
        raise _invalid(f"image {image!r} is a SIF file: real SIF files need real apptainer "
                       "(pull the image with 'hpc-exec apptainer pull docker://...' instead)")
    raise _invalid(f"image {image!r} is neither a squashfs file nor an image descriptor "
                   "written by 'hpc-exec apptainer pull'")


def _site_forbids() -> Callable[[str], bool]:
    """``path -> bool``: whether the site's ``userMounts`` refuse ``path`` as a destination."""
    from hpc_exec import engine

    return lambda path: not engine.mount_destination_allowed(path)


def _ntasks(environ: Mapping[str, str]) -> int:
    text = environ.get(NTASKS_VARIABLE, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise _invalid(f"invalid {NTASKS_VARIABLE}={text!r} (expected a positive integer)")
    return int(text)


# ---------------------------------------------------------------------------------------------
# Commands


def _exec(request: ExecRequest, options: GlobalOptions, say: Say) -> int:
    from hpc_exec import engine

    cwd = os.getcwd()
    environ: Mapping[str, str] = os.environ
    if not environ.get("HOME"):  # apptainer takes the home from the passwd entry then
        import pwd

        try:
            environ = {**os.environ, "HOME": pwd.getpwuid(os.getuid()).pw_dir}
        except KeyError:
            pass
    plan = exec_plan(request, cwd=cwd, environ=environ, quiet=options.quiet or options.silent,
                     forbidden=_site_forbids())
    for note in plan.notes:
        say(note, warning=True)
    ntasks = _ntasks(environ)
    image = _resolve_image(request.image, cwd, say)
    env = plan.env
    if plan.clean_env and any(name == "PATH" for name, _ in image.config.env):
        env = tuple(e for e in env if e != ("PATH", DEFAULT_PATH))  # the image's PATH wins
    run_options = engine.run_options(
        plan.command, mounts=plan.mounts, env={k: v for k, v in env if v is not None},
        env_passthrough=[k for k, v in env if v is None], clean_env=plan.clean_env,
        workdir=plan.workdir, entrypoint="", pid=plan.pid, sync=ntasks > 1,
        debug=options.debug)
    if ntasks > 1:
        from hpc_exec import process

        import tempfile

        # The environment's values go in a 0600 file on the shared working directory, not on
        # srun's command line, which every user of the nodes can read.
        fd, env_file = tempfile.mkstemp(prefix=".hpc-exec-env-", dir=cwd)
        os.close(fd)
        try:
            engine.write_env_file(env_file, run_options)
            # Each task resolves the squashfs path (its run config lies beside it), not the
            # reference: no index read per task, and every task runs the very same image.
            argv = ["srun", f"--ntasks={ntasks}", "--kill-on-bad-exit=1",
                    *engine.command_line(image.squashfs, run_options, env_file=env_file,
                                         program=(sys.executable, "-P", "-m", "hpc_exec"))]
            # No timeout of our own: the job's time limit bounds the step, and the signals
            # Slurm sends us reach srun through process.foreground.
            return process.foreground(argv, desc=f"srun of {ntasks} containers",
                                      timeout=None).returncode
        finally:
            os.unlink(env_file)
    return int(engine.execute(image, run_options))


def _pull(request: PullRequest, options: GlobalOptions, say: Say) -> int:
    from pathlib import Path

    from hpc_exec import engine
    from hpc_exec.files import replace_file

    ref = _reference(request.uri)
    if request.name is not None:
        name = request.name
    else:  # apptainer's default: <last path component>_<tag>.sif
        base = ref.rpartition("/")[2].partition("@")[0]
        image_name, _, tag = base.partition(":")
        name = f"{image_name}_{tag or 'latest'}.sif"
    target = Path(request.dir or os.getcwd()) / name
    if target.is_dir():
        raise _invalid(f"pull target {str(target)!r} is a directory")
    if target.exists() and not request.force:
        try:
            with open(target, "rb") as f:
                kind = image_kind(f.read(_HEAD))
        except OSError as exc:
            raise _invalid(f"cannot read {str(target)!r}: {exc.strerror}") from exc
        if kind != "descriptor":
            raise _invalid(f"image file {str(target)!r} already exists (use --force to "
                           "overwrite it)")
    if not target.parent.is_dir():
        raise _invalid(f"directory {str(target.parent)!r} does not exist")
    entry = None
    if os.environ.get("SLURM_JOB_ID"):
        # Inside a job the submit host has pulled the image already (the hpc-container
        # executor's pre-pull, or the main Snakemake's own pull), and compute nodes may not
        # reach the registry at all: use the cached entry, pull only if there is none.
        from hpc_exec.errors import ImageNotFound

        try:
            entry = engine.lookup(ref)
        except ImageNotFound:
            pass
    if entry is None:
        entry = engine.pull(ref)
    try:
        replace_file(target, descriptor_text(request.uri, entry))
    except OSError as exc:
        from hpc_exec.errors import RepositoryError

        raise RepositoryError(f"cannot write the image descriptor {target}: "
                              f"{exc.strerror or exc}") from exc
    say(f"{target.name}: {entry.key} ({entry.digest}) in the hpc-exec image cache")
    return 0


USAGE = f"""usage: {PROG} [global options] COMMAND ...

An apptainer-compatible front end of hpc-exec (docs/apptainer-frontend.md).

global options: --quiet/-q --silent/-s --debug/-d --verbose/-v --nocolor --version --help/-h
commands:
  version                         print the version
  pull [--name NAME] [--dir DIR] [--force] [NAME] docker://REF
                                  pull REF into the hpc-exec cache; write NAME describing it
  exec [options] IMAGE CMD [ARG...]
                                  run CMD in IMAGE (a pulled NAME, a squashfs file, or
                                  docker://REF)
exec options: --bind/-B SRC[:DST[:ro|rw]] --home/-H SRC[:DST] --no-home --pwd DIR
              --env K=V --cleanenv/-e --contain/-c --containall/-C --nv --writable-tmpfs
Anything else is refused with "unsupported option"."""


def _say_function(options: GlobalOptions) -> Say:
    def say(message: str, *, warning: bool = False) -> None:
        if options.silent or (options.quiet and not warning):
            return
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    return say


def _setup_logging(options: GlobalOptions) -> None:
    import logging

    log = logging.getLogger("hpc_exec")
    level = (logging.DEBUG if options.debug else logging.INFO if options.verbose
             else logging.CRITICAL + 1 if options.silent
             else logging.ERROR if options.quiet else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpc-exec: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def run(argv: Sequence[str], *, debug: bool = False) -> int:
    """Run the invocation ``argv`` (without the program name); return the exit status."""
    from hpc_exec.errors import ExitCode, HpcExecError

    try:
        invocation = parse_argv(argv)
        options = invocation.options
        if debug:
            options = options._replace(debug=True)
        if invocation.command == "version":
            if argv and argv[0] == "version":
                print(APPTAINER_VERSION)
            else:
                print(f"apptainer version {APPTAINER_VERSION}")
            return 0
        if invocation.command.startswith("help"):
            print(USAGE)
            return 0
        _setup_logging(options)
        say = _say_function(options)
        if isinstance(invocation.request, PullRequest):
            return _pull(invocation.request, options, say)
        assert isinstance(invocation.request, ExecRequest)
        return _exec(invocation.request, options, say)
    except HpcExecError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"{PROG}: hint: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return int(ExitCode.INTERNAL)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hpc-exec-apptainer`` console script."""
    return run(list(sys.argv[1:] if argv is None else argv))


def add_parser(sub: Any) -> None:
    """``hpc-exec apptainer ARGS...``: ARGS go unparsed to this front end's own parser."""
    p = sub.add_parser(
        "apptainer", add_help=False, prefix_chars="\0",
        help="apptainer-compatible front end (exec, pull, --version) for Snakemake",
        description="Run the apptainer command line ARGS with hpc-exec "
        "(docs/apptainer-frontend.md); 'hpc-exec apptainer --help' lists what is supported.")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(handler=lambda a: run(a.args, debug=bool(getattr(a, "debug", False))))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
