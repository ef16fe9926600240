"""The ``hpc-exec`` command line (Sarus-compatible where Sarus has the command).

Each subcommand imports its implementation lazily, so ``hpc-exec --help`` and the per-task
``hpc-exec run`` pay only for what they use. Every :class:`HpcExecError` becomes one line on
stderr (plus its hint) and the exit code of its class; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hpc_exec import __version__
from hpc_exec.errors import ExitCode, HpcExecError

__all__ = ["Once", "build_parser", "main", "nonempty"]

log = logging.getLogger("hpc_exec")

Handler = Callable[[argparse.Namespace], int]

# Modules that each define ``add_parser(subparsers)``; a subparser sets ``handler`` (a function
# of the parsed args returning the exit code). Keep these modules light: heavy imports belong
# inside the handlers, so that one command never pays for another.
COMMAND_MODULES = [
    "hpc_exec.testbed.cli",
    "hpc_exec.cli.images",
    "hpc_exec.cli.run",
    "hpc_exec.cli.containers",
    "hpc_exec.cli.ssh",
    "hpc_exec.cli.config",
    "hpc_exec.cli.apptainer",
]


# Commands on a per-task hot path: when one of them is the command, only its module is
# imported and registered (the others would cost every task their imports and parsers).
HOT_COMMANDS = {"run": "hpc_exec.cli.run", "pull": "hpc_exec.cli.images",
                "apptainer": "hpc_exec.cli.apptainer"}


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter without ``import shutil``: argparse builds one per argument added,
    and the stock one imports shutil (and its compression modules) for the terminal width,
    which every ``hpc-exec run`` would pay. The width is found the same way: $COLUMNS, else
    the terminal's, else 80."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _columns() - 2)


def _columns() -> int:
    import os

    try:
        columns = int(os.environ["COLUMNS"])
        if columns > 0:  # as shutil.get_terminal_size: 0 or less asks the terminal
            return columns
    except (KeyError, ValueError):
        pass
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subparsers (same class) all use :class:`_Formatter`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class Once(argparse.Action):
    """An option that takes one value and may be given once: a second ``--workdir`` is a
    usage error, as in Sarus (boost's "option cannot be specified more than once")."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        seen = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in seen:
            parser.error(f"option {'/'.join(self.option_strings)} may be given only once")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


def nonempty(text: str) -> str:
    """An option value that must not be empty (``--mpi-type ""``, ``--username ""``)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty value is not allowed")
    return text


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of ``command`` when it is a hot one."""
    parser = _Parser(
        prog="hpc-exec",
        description="Run OCI containers on HPC clusters, images pulled once into a squashfs cache.",
        epilog="Exit codes: see docs/exit-codes.md. Run 'hpc-exec COMMAND --help' for a command.",
    )
    parser.add_argument("--version", action="version", version=f"hpc-exec {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log lines")
    # Where hpc_exec.engine.run's child writes an engine error as JSON (class and fields), so
    # the caller can raise it again; not for people, hence hidden. Give it as --report-fd=N.
    parser.add_argument("--report-fd", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = False  # main names an unknown option first, then a missing command

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _a: print(f"hpc-exec {__version__}") or 0)
    helper = sub.add_parser("help", help="print the help of hpc-exec or of a COMMAND",
                            description="hpc-exec help [COMMAND], as 'sarus help run'.")
    helper.add_argument("topic", nargs="?", metavar="COMMAND")
    helper.set_defaults(handler=_help)

    import importlib

    for name in [HOT_COMMANDS[command]] if command in HOT_COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _help(args: argparse.Namespace) -> int:
    parser = build_parser()
    if args.topic is None:
        parser.print_help()
        return 0
    choices: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse keeps the subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            choices = action.choices
    if args.topic not in choices:
        parser.error(f"unknown command {args.topic!r} (hpc-exec help lists them)")
    choices[args.topic].print_help()
    return 0


def _setup_logging(debug: bool, verbose: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpc-exec: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _report(fd: int, exc: BaseException) -> None:
    from hpc_exec.engine.runtime.api import write_report

    write_report(fd, exc)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No global option takes a value, so the first word is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command) if command in HOT_COMMANDS else build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would say "COMMAND is required" for 'hpc-exec --bogus'
        unknown = next((a for a in extra if a.startswith("-")), extra[0])
        parser.error(f"unknown option {unknown!r}" if unknown.startswith("-")
                     else f"unexpected argument {unknown!r}")
    if args.command is None:
        parser.error("a COMMAND is required (hpc-exec help lists them)")
    args.argv = argv  # the raw words, for what argparse's REMAINDER handling hides
    _setup_logging(args.debug, args.verbose)
    handler: Handler = args.handler
    report = args.report_fd
    if report is not None:
        import os

        os.set_inheritable(report, False)  # for us alone, not for runc or the container
    return guarded(lambda: handler(args), prog="hpc-exec", debug=args.debug, report_fd=report,
                   what=args.command)


def guarded(call: Callable[[], int], *, prog: str, debug: bool, report_fd: int | None = None,
            error_word: str = "error: ", what: str = "command") -> int:
    """``call()``'s exit status, or its failure as the exit code of its class (docs/exit-codes.md)
    after one line on stderr (``PROG: error: message`` and a hint line); a bug is one line
    too (``internal error``, 125) unless ``debug``, which shows the traceback. ``report_fd``:
    where engine.run's child writes the error for its caller. Shared by ``hpc-exec`` and the
    apptainer front end (``error_word=""``, as apptainer prints)."""
    try:
        return int(call())
    except HpcExecError as exc:
        if report_fd is not None:
            _report(report_fd, exc)
        if debug:
            log.exception("%s failed", what)
        print(f"{prog}: {error_word}{exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"{prog}: hint: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: still one line unless --debug
        if report_fd is not None:
            _report(report_fd, exc)
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
