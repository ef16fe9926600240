"""The pure half of the apptainer front end (hpc_exec/cli/apptainer.py): the command
line and the environment read into requests, and the plan of one ``exec`` (mounts, environment,
workdir, command). Nothing here touches the system; bad input raises
:class:`~hpc_exec.errors.InvalidInput` with a one-line message."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from hpc_exec.mountspec import Mount

__all__ = ["APPTAINER_VERSION", "BASH_FALLBACK", "BASH_FALLBACK_QUIET", "BIND_VARIABLES",
           "DEFAULT_PATH", "DESCRIPTOR_FORMAT", "NTASKS_VARIABLE", "PROG", "ExecPlan",
           "ExecRequest", "GlobalOptions", "Invocation", "PullRequest", "Say", "exec_plan",
           "invalid", "parse_argv", "parse_bind", "parse_env",
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


def invalid(message: str) -> Exception:
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
            raise invalid(f"invalid value {value!r} for {spelling} (true or false)")

    def value_of(spelling: str) -> str:
        nonlocal i
        if i + 1 >= len(argv):
            raise invalid(f"option {spelling} needs a value")
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
                raise invalid(f"unsupported option {name}")
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
                    raise invalid(f"unsupported option {spelling}")
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
            raise invalid("exec needs IMAGE and a command (exec [options] IMAGE CMD [ARG...])")
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
            raise invalid("pull needs one URI (pull [--name NAME] [NAME] docker://REF)")
        return Invocation(options, "pull", PullRequest(
            uri=operands[0], name=name, dir=dirs[-1] if dirs else None,
            force=bool(opts.get("force"))))
    raise invalid(f"unsupported command {command!r} (supported: exec, pull, version)")


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
            raise invalid(f"invalid bind {item!r} (expected SRC[:DST[:ro|rw]])")
        readonly = False
        if len(parts) == 3:
            if parts[2] not in ("ro", "rw"):
                raise invalid(f"unsupported bind option {parts[2]!r} in {item!r} "
                               "(ro or rw)")
            readonly = parts[2] == "ro"
        source = os.path.normpath(os.path.join(cwd, parts[0]))
        destination = parts[1] if len(parts) > 1 and parts[1] else source
        if not destination.startswith("/"):
            raise invalid(f"bind destination {destination!r} in {item!r} must be an "
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
        raise invalid(f"invalid --env {text!r} (expected NAME=VALUE)")
    if count == 1:
        items = [text.strip('"')]
    else:
        import csv

        try:
            items = next(csv.reader([text]))
        except (csv.Error, StopIteration) as exc:
            raise invalid(f"invalid --env {text!r} (expected NAME=VALUE[,NAME=VALUE...])"
                           ) from exc
    import re

    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise invalid(f"invalid --env entry {item!r} in {text!r} (expected NAME=VALUE)")
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
    pid: str | None  # "private", or None: the engine's default (the host's)
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
            raise invalid(f"invalid --home {request.home!r} (expected SRC[:DST])")
        src = os.path.normpath(os.path.join(cwd, src))
        dst = os.path.normpath(dst) if dst else src
        if not dst.startswith("/"):
            raise invalid(f"--home destination {dst!r} must be an absolute path")
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
        # The engine maps the host's CUDA_VISIBLE_DEVICES to NVIDIA_VISIBLE_DEVICES and the
        # container's numbering, --cleanenv or not (copying the host's value with -e would undo
        # the renumbering), and the site's NVIDIA hook binds driver and devices; --nv keeps
        # the host's driver capabilities with --cleanenv, and selects every GPU outside Slurm.
        if "NVIDIA_DRIVER_CAPABILITIES" in environ and "NVIDIA_DRIVER_CAPABILITIES" not in sets:
            env.append(("NVIDIA_DRIVER_CAPABILITIES", None))
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
                    pid="private" if request.containall else None, notes=tuple(notes))
