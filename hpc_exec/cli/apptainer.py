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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


from hpc_exec.cli._apptainer_args import (
    APPTAINER_VERSION,
    BASH_FALLBACK,
    BASH_FALLBACK_QUIET,
    BIND_VARIABLES,
    DEFAULT_PATH,
    DESCRIPTOR_FORMAT,
    NTASKS_VARIABLE,
    PROG,
    ExecPlan,
    ExecRequest,
    GlobalOptions,
    Invocation,
    PullRequest,
    Say,
    exec_plan,
    invalid,
    parse_argv,
    parse_bind,
    parse_env,
    wrap_command,
)

__all__ = ["APPTAINER_VERSION", "BASH_FALLBACK", "BASH_FALLBACK_QUIET", "BIND_VARIABLES",
           "DEFAULT_PATH", "DESCRIPTOR_FORMAT", "NTASKS_VARIABLE", "ExecPlan", "ExecRequest",
           "GlobalOptions", "Invocation", "PullRequest", "add_parser", "descriptor_text",
           "exec_plan", "image_kind", "main", "parse_argv", "parse_bind", "parse_env", "run",
           "wrap_command"]

_SIF_MAGIC = b"SIF_MAGIC"
_SQUASHFS_MAGIC = b"hsqs"
_SINGULARITY_SHEBANG = b"#!/usr/bin/env run-singularity"
# Apptainer's image sources without "://" (all unsupported here).
_OTHER_SCHEMES = ("docker-archive:", "docker-daemon:", "oci-archive:", "oci:")
_HEAD = 65536  # bytes read to recognise an image file (a descriptor is far smaller)

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
        "pinned": entry.pinned,
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
        raise invalid(f"image descriptor {path} is damaged ({exc}); delete it and pull "
                       "again") from exc


def _reference(uri: str) -> str:
    """The engine reference of a ``docker://`` or ``oras://`` URI (InvalidInput otherwise)."""
    for scheme in ("docker://", "oras://"):
        if uri.startswith(scheme):
            if not uri[len(scheme):]:
                raise invalid(f"empty image reference in {uri!r}")
            # the engine reads both schemes as registry references
            return uri[len(scheme):] if scheme == "docker://" else uri
    if "://" in uri or uri.startswith(_OTHER_SCHEMES):
        raise invalid(f"unsupported image URI {uri!r}: hpc-exec apptainer pulls only "
                       "docker:// (and oras://) references (for SIF images use real apptainer)")
    raise invalid(f"unsupported image URI {uri!r} (expected docker://[server/]name[:tag])")


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
        raise invalid(f"image {image!r} is a directory: sandbox images need real apptainer")
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except FileNotFoundError as exc:
        from hpc_exec.errors import ImageNotFound

        raise ImageNotFound(f"image file {image!r} not found") from exc
    except OSError as exc:
        raise invalid(f"cannot read image {image!r}: {exc.strerror}") from exc
    kind = image_kind(head)
    if kind == "squashfs":
        return engine.resolve(Path(path))
    if kind == "descriptor":
        pinned = _read_descriptor(path, head)
        return _cached_or_pulled(pinned, say)
    if kind == "sif":
        raise invalid(f"image {image!r} is a SIF file: real SIF files need real apptainer "
                       "(pull the image with 'hpc-exec apptainer pull docker://...' instead)")
    raise invalid(f"image {image!r} is neither a squashfs file nor an image descriptor "
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
        raise invalid(f"invalid {NTASKS_VARIABLE}={text!r} (expected a positive integer)")
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
        import secrets

        from hpc_exec import process

        # The environment's values go in a 0600 file on the shared working directory, not on
        # srun's command line, which every user of the nodes can read (written once, by
        # write_env_file's own temp file and rename).
        env_file = os.path.join(cwd, f".hpc-exec-env-{secrets.token_hex(8)}")
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
            try:
                os.unlink(env_file)
            except FileNotFoundError:  # write_env_file failed before the file was there
                pass
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
        raise invalid(f"pull target {str(target)!r} is a directory")
    if target.exists() and not request.force:
        try:
            with open(target, "rb") as f:
                kind = image_kind(f.read(_HEAD))
        except OSError as exc:
            raise invalid(f"cannot read {str(target)!r}: {exc.strerror}") from exc
        if kind != "descriptor":
            raise invalid(f"image file {str(target)!r} already exists (use --force to "
                           "overwrite it)")
    if not target.parent.is_dir():
        raise invalid(f"directory {str(target.parent)!r} does not exist")
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
    from hpc_exec.cli import guarded

    return guarded(lambda: _run(argv, debug), prog=PROG, debug=debug, error_word="")


def _run(argv: Sequence[str], debug: bool) -> int:
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
