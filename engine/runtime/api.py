"""The run side's Python API, re-exported by :mod:`hpc_exec.engine`: the one road from a
request to runc for the CLI and every front end.

* :func:`resolve` turns what a caller names into an :class:`~options.Image`. One rule for
  files: a :class:`~pathlib.Path`, or a string that starts with ``/``, ``./`` or ``../`` or
  ends with ``.sqfs`` or ``.squashfs``, is a squashfs file; any other string is an image
  reference, looked up in the local, then the centralized repository (a cheap read of the
  index, the same for ``hpc-exec run`` and for the API).
* :func:`run_options` builds :class:`~options.RunOptions` from Python values;
  :func:`command_line` writes the exact ``hpc-exec run`` argv for them, which ``hpc-exec run``
  parses back to the same options (front ends put it into Slurm jobs).
* :func:`run` runs a container for a Python caller and returns its exit status, or a
  :class:`RunResult` with ``capture=True``. It never forks the caller: it runs ``hpc-exec run``
  as a child process (through :func:`hpc_exec.process.foreground`), so it is safe in threaded
  callers. An engine error in the child is raised in the caller with its class and fields.
* :func:`execute` runs the container in *this* process, which enters the container's
  namespaces and must end afterwards: what ``hpc-exec run`` itself does.
* :func:`inspect` gives an image's config (entrypoint, cmd, env, workdir, labels).

Environment policy (docs/run.md, "Environment"): the container starts from the host
environment of the process that runs it (for :func:`run`, the caller's ``os.environ``), or from
nothing with ``clean_env``; then the image's variables, the site's edits, and last ``env``
(``NAME=VALUE`` sets; a name alone copies the host's value, which then wins over the image and
the site, also with ``clean_env``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.engine.runtime.options import (
    Image,
    ImageConfig,
    RunOptions,
    check_env_name,
    effective_pid,
    parse_annotation,
    parse_env_option,
)

from hpc_exec.config import Settings
from hpc_exec.errors import HpcExecError, ImageNotFound, InvalidInput, RuntimeFailure
from hpc_exec.mountspec import (
    Device,
    Mount,
    bind,
    format_device,
    format_mount,
    parse_device,
    parse_mount,
)

__all__ = ["Image", "ImageConfig", "RunOptions", "RunResult", "command_line", "containers",
           "execute", "inspect", "is_squashfs_path", "kill", "mount_destination_allowed",
           "mpi_hook_types", "parse_annotation", "parse_env_option", "read_env_file", "resolve",
           "run", "run_options", "site_hooks", "write_env_file"]

Bind = str | tuple[str, str] | tuple[str, str, bool]


class RunResult(NamedTuple):
    """A captured run: the container's exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def is_squashfs_path(text: str) -> bool:
    """The one rule: does ``text`` name a squashfs file rather than an image reference?"""
    return text.startswith(("/", "./", "../")) or text.endswith((".sqfs", ".squashfs"))


def resolve(image: Any, *, centralized: bool | None = None,
            settings: Settings | None = None) -> Image:
    """The :class:`Image` that ``image`` names: an Image, an ImageEntry of the image side, a
    squashfs file (see :func:`is_squashfs_path`) or a reference (ImageNotFound if never
    pulled)."""
    if isinstance(image, Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if isinstance(image, os.PathLike) or is_squashfs_path(text):
            path = Path(text)
            if not path.is_file():
                raise ImageNotFound(f"squashfs file {text} does not exist")
            return Image.from_squashfs(path.absolute())
        from hpc_exec.engine.api import lookup

        return Image.from_entry(lookup(text, centralized=centralized, settings=settings))
    if hasattr(image, "squashfs") and hasattr(image, "metadata"):
        return Image.from_entry(image)
    raise InvalidInput(f"not an image: {image!r}")


def inspect(image: Any, *, centralized: bool | None = None,
            settings: Settings | None = None) -> ImageConfig:
    """The run config of ``image`` (anything :func:`resolve` takes)."""
    return resolve(image, centralized=centralized, settings=settings).config


def site_hooks(hooks_dir: Path | None = None) -> list[Any]:
    """The hooks of ``hooks_dir`` (default: the site's ``hooksDir``), validated, in file-name
    order."""
    from hpc_exec.engine.runtime.hookconfig import load_hooks

    from hpc_exec.config import load_settings

    return list(load_hooks(hooks_dir if hooks_dir is not None else load_settings().hooks_dir))


def mpi_hook_types(hooks: Sequence[Any]) -> list[tuple[Any, str]]:
    """(hook, MPI type) for each MPI hook of ``hooks`` (``hpc-exec hooks --mpi``)."""
    from hpc_exec.engine.runtime.hookconfig import mpi_types

    return list(mpi_types(hooks))


def _bind(value: Bind) -> Mount:
    """``"SRC[:DST][:ro|rw]"`` or ``(src, dst[, readonly])`` as a Mount."""
    if isinstance(value, tuple):
        return bind(value[0], value[1], readonly=bool(value[2]) if len(value) > 2 else False)
    parts = value.split(":")
    readonly = False
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        readonly = parts.pop() == "ro"
    if len(parts) > 2 or not parts[0]:
        raise InvalidInput(f"invalid bind {value!r} (expected SRC[:DST][:ro]; for a path "
                           "with ':' give a (src, dst) tuple)")
    return bind(parts[0], parts[-1], readonly=readonly)


def run_options(command: Sequence[str] = (), *, binds: Iterable[Bind] = (),
                mounts: Iterable[Mount | str] = (), devices: Iterable[Device | str] = (),
                env: Mapping[str, str] | None = None, env_passthrough: Iterable[str] = (),
                clean_env: bool = False, workdir: str | None = None,
                home: str | None = None, entrypoint: str | None = None, init: bool = False,
                pid: str | None = None, mpi: bool = False, mpi_type: str | None = None,
                glibc: bool = False, ssh: bool = False, sync: bool = False,
                annotations: Mapping[str, str] | None = None, tty: bool = False,
                debug: bool = False, name: str | None = None) -> RunOptions:
    """Validated :class:`RunOptions` from Python values.

    ``binds`` are ``SRC[:DST][:ro]`` strings or ``(src, dst[, readonly])`` tuples (any path);
    ``mounts`` and ``devices`` are Mount/Device values or ``--mount``/``--device`` text.
    ``home`` binds that host directory at the same path and sets ``HOME``. ``env`` sets
    variables; ``env_passthrough`` names host variables whose value wins over the image's and
    the site's (``-e NAME``). See the module docstring for the environment policy.
    """
    all_mounts = [_bind(b) for b in binds]
    all_mounts += [parse_mount(m) if isinstance(m, str) else m for m in mounts]
    env_items: list[tuple[str, str | None]] = [
        (check_env_name(n, "env_passthrough"), None) for n in env_passthrough]
    env_items += [(check_env_name(k, "env"), str(v)) for k, v in (env or {}).items()]
    if home:
        all_mounts.append(bind(home, home))
        env_items.append(("HOME", home))
    if workdir is not None and not workdir.startswith("/"):
        raise InvalidInput(f"workdir must be an absolute path, got {workdir!r}")
    for key in (annotations or {}):
        if not key or "=" in key:
            raise InvalidInput(f"invalid annotation key {key!r}")
    if name is not None:
        from hpc_exec.engine.runtime.runc import check_name

        check_name(name)
    options = RunOptions(
        command=tuple(command), mounts=tuple(all_mounts),
        devices=tuple(parse_device(d) if isinstance(d, str) else d for d in devices),
        env=tuple(env_items), clean_env=clean_env, workdir=workdir, entrypoint=entrypoint,
        init=init, pid=pid, mpi=mpi, mpi_type=mpi_type, glibc=glibc, ssh=ssh, sync=sync,
        annotations=tuple((k, str(v)) for k, v in (annotations or {}).items()), tty=tty,
        log_level="debug" if debug else None,
        name=name)
    effective_pid(options)  # InvalidInput for a bad pid or ssh with pid="host"
    return options


def _state(settings: Settings | None) -> tuple[str, Path, bool]:
    """(runc, this user's state root, rootless) for ``ps`` and ``kill``."""
    from hpc_exec.engine.runtime import runc

    from hpc_exec.config import load_settings

    settings = settings or load_settings()
    rootless = os.geteuid() != 0
    return runc.find_runc(settings.runc_path), runc.state_root(rootless), rootless


def containers(*, settings: Settings | None = None) -> str:
    """runc's table of this user's containers (``hpc-exec ps``, as ``sarus ps``); what
    engines killed earlier left there is removed first."""
    from hpc_exec.engine.runtime import runc

    from hpc_exec import process

    runc_path, root, rootless = _state(settings)
    if not root.is_dir():
        return "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    runc.sweep(root, runc_path, rootless)
    return process.run(runc.list_argv(runc_path, root, rootless), timeout=60,
                       desc="listing the containers (runc list)").stdout


def kill(name: str, signal: str = "SIGHUP", *, settings: Settings | None = None) -> None:
    """Send ``signal`` (a name, with or without ``SIG``, or a number) to the container
    ``name`` (``hpc-exec kill``; Sarus sends SIGHUP); its ``hpc-exec run`` then ends with the
    container's status. InvalidInput for an unknown signal or no running container ``name``."""
    import signal as signals

    from hpc_exec.engine.runtime import runc

    from hpc_exec import process

    runc.check_name(name)
    text = signal.upper()
    try:
        number = int(text) if text.isdigit() else \
            signals.Signals[text if text.startswith("SIG") else f"SIG{text}"].value
        signals.Signals(number)
    except (KeyError, ValueError):
        raise InvalidInput(f"unknown signal {signal!r} (a name such as TERM or SIGTERM, or a "
                           "number)") from None
    runc_path, root, rootless = _state(settings)
    if not runc.engine_alive(root, name):
        raise InvalidInput(f"no running container named {name!r} ('hpc-exec ps' lists them)")
    process.run(runc.kill_argv(runc_path, root, rootless, name, str(number)), timeout=60,
                desc=f"signalling container {name}")


def command_line(image: str | os.PathLike[str], options: RunOptions, *,
                 centralized: bool = False, program: Sequence[str] = ("hpc-exec",),
                 env_file: str | None = None) -> list[str]:
    """The ``hpc-exec run`` argv for ``image`` and ``options``; ``hpc-exec run`` parses it
    back to the same options. Values go in ``--option=value`` form, so none is read as an
    option; a squashfs file is written as an absolute path. With ``env_file`` (written by
    :func:`write_env_file`), the environment entries are read from that file instead of
    appearing on the command line, where every user of the node could read them."""
    text = os.fspath(image)
    if isinstance(image, os.PathLike) or is_squashfs_path(text):
        text = os.path.abspath(text)
    argv = list(program)
    if options.log_level == "debug":
        argv.append("--debug")
    argv.append("run")
    if env_file is not None:
        argv.append(f"{ENV_FILE_OPTION}={env_file}")
        options = options._replace(env=())
    argv += [f"--mount={format_mount(m)}" for m in options.mounts]
    argv += [f"--device={format_device(d)}" for d in options.devices]
    argv += [f"--env={n}" if v is None else f"--env={n}={v}" for n, v in options.env]
    if options.clean_env:
        argv.append("--clean-env")
    if options.workdir is not None:
        argv.append(f"--workdir={options.workdir}")
    if options.entrypoint is not None:
        argv.append(f"--entrypoint={options.entrypoint}")
    for flag in ("init", "mpi", "glibc", "ssh", "sync", "tty"):
        if getattr(options, flag):
            argv.append(f"--{flag}")
    if options.pid is not None:
        argv.append(f"--pid={options.pid}")
    if options.mpi_type is not None:
        argv.append(f"--mpi-type={options.mpi_type}")
    argv += [f"--annotation={k}={v}" for k, v in options.annotations]
    if options.name is not None:
        argv.append(f"--name={options.name}")
    if centralized:
        argv.append("--centralized-repository")
    return [*argv, text, "--", *options.command]


def execute(image: Any, options: RunOptions, *, centralized: bool | None = None,
            settings: Settings | None = None) -> int:
    """Run in this process (see the module docstring); return the container's status."""
    from hpc_exec.engine.runtime import run as _run

    return _run.run(options, resolve(image, centralized=centralized, settings=settings),
                    settings=settings)


# -- the child process of run() ----------------------------------------------------------------

REPORT_FD_OPTION = "--report-fd"  # hidden global option of hpc-exec: where errors go as JSON
ENV_FILE_OPTION = "--env-file"  # hidden option of hpc-exec run: -e entries as JSON, not argv
_REPORT_FIELD_LIMIT = 16_000  # characters per text field: the whole report fits a pipe buffer


def write_report(fd: int, exc: BaseException) -> None:
    """Write ``exc`` to the report pipe: its class and every field (``hpc-exec run``)."""
    if isinstance(exc, HpcExecError):
        fields = {k: (v[-_REPORT_FIELD_LIMIT:] if isinstance(v, str) else v)
                  for k, v in vars(exc).items()}
        data = {"class": type(exc).__name__, "fields": fields}
    else:
        data = {"class": "RuntimeFailure",
                "fields": {"message": f"internal error: {type(exc).__name__}: "
                                      f"{str(exc)[:_REPORT_FIELD_LIMIT]}",
                           "hint": "rerun with --debug"}}
    try:
        os.write(fd, json.dumps(data, default=str)[:60_000].encode())
    except OSError:
        pass


def _rebuild(report: bytes) -> HpcExecError:
    from hpc_exec import errors

    try:
        data = json.loads(report)
        fields = dict(data.get("fields") or {})
        cls = getattr(errors, str(data.get("class")), None)
    except (ValueError, TypeError, AttributeError):
        return RuntimeFailure("hpc-exec run reported an error that cannot be read: "
                              f"{report[:200]!r}")
    if not (isinstance(cls, type) and issubclass(cls, HpcExecError)):
        cls = RuntimeFailure
    err = cls.__new__(cls)
    Exception.__init__(err, fields.get("message", ""))
    err.__dict__.update(fields)
    return err


def read_env_file(path: str) -> tuple[tuple[str, str | None], ...]:
    """The ``-e`` entries :func:`run` hands its child out of band (``--env-file``): values
    never appear on a command line, where every user of the node could read them."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return tuple((check_env_name(str(n), "--env-file"), None if v is None else str(v))
                     for n, v in data)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read the environment file {path}: {exc}") from exc


def _env_text(options: RunOptions) -> bytes:
    return json.dumps([list(e) for e in options.env]).encode()


def write_env_file(path: str | os.PathLike[str], options: RunOptions) -> None:
    """Write the environment entries of ``options`` for ``command_line(env_file=path)``:
    mode 0600, by temp file and rename, so only the owner ever reads them."""
    from hpc_exec.files import replace_file

    replace_file(Path(path), _env_text(options).decode(), mode=0o600)


def _env_memfd(options: RunOptions) -> int:
    fd = os.memfd_create("hpc-exec-env")
    os.write(fd, _env_text(options))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def mount_destination_allowed(destination: str, settings: Settings | None = None) -> bool:
    """Whether the site's ``userMounts`` let a user mount at ``destination``."""
    from hpc_exec.engine.runtime.mounts import check_user_destination

    from hpc_exec.config import load_settings
    from hpc_exec.errors import SecurityError

    rules = (settings or load_settings()).user_mounts
    try:
        check_user_destination(destination, rules.not_allowed_prefixes_of_path,
                               rules.not_allowed_paths)
    except SecurityError:
        return False
    return True


def run(image: Any, command: Sequence[str] = (), *, options: RunOptions | None = None,
        capture: bool = False, timeout: float | None = None, centralized: bool | None = None,
        settings: Settings | None = None, **kwargs: Any) -> Any:
    """Run ``command`` in ``image``; return its exit status (``capture``: a RunResult).

    Give either ``options`` or the keyword arguments of :func:`run_options` (``command`` is
    used only with the latter). ``timeout`` (s) stops the container (SIGTERM, then SIGKILL)
    and raises CommandTimeout; None waits as long as it runs. ``settings`` is for resolving
    the image here; the child reads the site config named by ``HPC_EXEC_CONFIG`` as any
    ``hpc-exec`` does; with ``settings``, the child reads the file they came from.
    The ``env`` values reach the child through an in-memory file, never its command line.
    """
    from hpc_exec import process

    if options is None:
        options = run_options(command, **kwargs)
    elif kwargs or command:
        raise InvalidInput("give either options= or command and run_options() keywords")
    from hpc_exec.engine.runtime.run import host_environ

    host = host_environ()  # this interpreter's locale coercion is not the host's locale
    child_env = None if host is os.environ else dict(host)
    if settings is not None:
        if not settings.source.startswith("/"):
            raise InvalidInput(f"engine.run needs settings loaded from a file (these come "
                               f"from {settings.source}): the container is run by a child "
                               "process, which reads the site config itself")
        child_env = {**host, "HPC_EXEC_CONFIG": settings.source}
    resolved = resolve(image, centralized=centralized, settings=settings)  # errors: here
    report_r, report_w = os.pipe()
    env_fd = _env_memfd(options) if options.env else -1
    try:
        program = [sys.executable, "-P", "-m", "hpc_exec", f"{REPORT_FD_OPTION}={report_w}"]
        argv = command_line(resolved.squashfs, options, program=program,
                            env_file=f"/dev/fd/{env_fd}" if env_fd >= 0 else None)
        try:
            done = process.foreground(argv, desc=f"running a container of {resolved.name}",
                                      timeout=timeout, capture=capture, env=child_env,
                                      pass_fds=(report_w, *([env_fd] if env_fd >= 0 else [])))
        finally:
            os.close(report_w)
            report_w = -1
        with os.fdopen(report_r, "rb") as f:
            report_r = -1
            report = f.read()
    finally:
        for fd in (report_r, report_w, env_fd):
            if fd >= 0:
                os.close(fd)
    if report:
        raise _rebuild(report)
    if capture:
        return RunResult(done.returncode, done.stdout, done.stderr)
    return done.returncode
