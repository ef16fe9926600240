"""``hpc-exec run`` and ``hpc-exec hooks``.

``run`` is on every task's hot path: this module imports only argparse at load time, and the
handler imports the runtime (and the image side only when IMAGE is a reference, not a file).
Everything after IMAGE belongs to the container, options included. ``run`` ends the process
itself with the container's status once the container is gone (``os._exit``, no interpreter
teardown): call it through the ``hpc-exec`` program, or use :func:`hpc_exec.engine.run`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from hpc_exec.cli import Once, nonempty

__all__ = ["add_parser", "hooks_command", "run_command"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a command in a container",
        description="Run IMAGE (a reference in the local or centralized repository, or a "
        "squashfs file: a path starting with /, ./ or ../, or ending in .sqfs or .squashfs) "
        "with runc. Everything after IMAGE (or after 'IMAGE --') is the container's command. "
        "Exits with the container's own status; engine failures use codes 110-125 "
        "(docs/exit-codes.md).")
    p.add_argument("--mount", action="append", default=[], metavar="SPEC",
                   help="type=bind,src=/host/path,dst=/container/path[,readonly] (a comma or "
                   "'=' in a path: \\, \\=)")
    p.add_argument("--device", action="append", default=[], metavar="SPEC",
                   help="/dev/host[:/dev/container][:rwm]")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="set a variable (NAME alone copies the host's value)")
    p.add_argument("--env-file", default=None, action=Once, help=argparse.SUPPRESS)  # hpc_exec.engine.run's
    p.add_argument("--clean-env", action="store_true",
                   help="start from no host variables (only the image's, the site's and -e)")
    p.add_argument("-w", "--workdir", default=None, metavar="DIR", action=Once,
                   help="working directory in the container (created if missing)")
    p.add_argument("--entrypoint", default=None, metavar="X", action=Once,
                   help="replace the image's entrypoint (and drop its cmd); '' removes it")
    p.add_argument("--init", action="store_true", help="run tini as PID 1")
    p.add_argument("--pid", choices=("host", "private"), default=None, action=Once,
                   help="PID namespace (default: the host's, as MPI needs; private with --ssh)")
    p.add_argument("-m", "--mpi", action="store_true",
                   help="enable the MPI hook (default MPI type)")
    p.add_argument("--mpi-type", default=None, metavar="T", action=Once, type=nonempty,
                   help="enable the MPI hook for T")
    p.add_argument("--glibc", action="store_true", help="enable the glibc hook")
    p.add_argument("--ssh", action="store_true", help="enable the SSH hook (and the barrier)")
    p.add_argument("--sync", action="store_true",
                   help="enable the Slurm global-sync barrier hook")
    p.add_argument("--annotation", action="append", default=[], metavar="K=V",
                   help="OCI annotation; overrides the engine's and the image labels")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-n", "--name", default=None, metavar="NAME", action=Once, type=nonempty,
                   help="the container's name, unique on the node ('hpc-exec ps' lists it, "
                   "'hpc-exec kill NAME' stops it; default: hpc-exec-<pid>-<random>)")
    p.add_argument("--centralized-repository", action="store_true",
                   help="take IMAGE from the centralized repository")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD ARG...")
    p.set_defaults(handler=run_command)

    h = sub.add_parser("hooks", help="list the OCI hooks of the site's hooks.d",
                       description="List the hooks configured in hooksDir: NAME, PATH, "
                       "STAGES; with --mpi, the MPI hooks and their MPI TYPE.")
    h.add_argument("--mpi", action="store_true", help="list the MPI hooks and types")
    h.set_defaults(handler=hooks_command)


def container_command(image: str, parsed: list[str], argv: list[str]) -> list[str]:
    """The container's command: what follows IMAGE, less one ``--`` right after IMAGE.

    argparse (3.11) drops that ``--`` itself from the REMAINDER, other versions keep it; so the
    raw ``argv`` tells whether the ``--`` that ``parsed`` may start with is the separator
    (remove it) or the container's own word (``IMAGE -- -- x`` runs ``-- x``)."""
    n = len(parsed)
    consumed = argv[len(argv) - n - 2:len(argv) - n] == [image, "--"]
    if parsed[:1] == ["--"] and not consumed:
        return parsed[1:]
    return parsed


def options_from_args(args: argparse.Namespace, argv: list[str]) -> Any:
    """The engine's RunOptions for ``hpc-exec run`` arguments parsed from ``argv`` (text is
    parsed here, at the edge, once)."""
    from hpc_exec.engine.runtime.api import (
        RunOptions,
        parse_annotation,
        parse_env_option,
        read_env_file,
    )
    from hpc_exec.mountspec import parse_device, parse_mount

    command = container_command(args.image, list(args.command), argv)
    env = tuple(parse_env_option(e) for e in args.env)
    if args.env_file is not None:
        env += read_env_file(args.env_file)
    return RunOptions(
        command=tuple(command), mounts=tuple(parse_mount(m) for m in args.mount),
        devices=tuple(parse_device(d) for d in args.device),
        env=env, clean_env=args.clean_env,
        workdir=args.workdir, entrypoint=args.entrypoint, init=args.init, pid=args.pid,
        mpi=args.mpi, mpi_type=args.mpi_type, glibc=args.glibc, ssh=args.ssh, sync=args.sync,
        annotations=tuple(parse_annotation(a) for a in args.annotation), tty=args.tty,
        log_level="debug" if getattr(args, "debug", False) else None, name=args.name)


def run_command(args: argparse.Namespace) -> int:
    from hpc_exec.engine.runtime.api import execute

    options = options_from_args(args, args.argv)
    status = execute(args.image, options, centralized=True if args.centralized_repository
                     else None)
    # This process now lives in the container's (dead) namespaces and has nothing left to do:
    # skip the interpreter's teardown, which costs every task milliseconds for nothing.
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def hooks_command(args: argparse.Namespace) -> int:
    import re

    from hpc_exec.config import load_settings
    from hpc_exec.engine.runtime.api import mpi_hook_types as mpi_types
    from hpc_exec.engine.runtime.api import site_hooks

    settings = load_settings()
    hooks = site_hooks(settings.hooks_dir)
    default = settings.default_mpi_type
    if args.mpi:  # as Sarus prints it: the value regex, "(default)" when defaultMPIType matches
        rows = [("NAME", "MPI TYPE")]
        for hook, kind in mpi_types(hooks):
            mark = " (default)" if default and re.fullmatch(kind, default) else ""
            rows.append((hook.name, kind + mark))
    else:
        rows = [("NAME", "PATH", "STAGES")]  # type: ignore[list-item]
        rows += [(h.name, h.path, ",".join(h.stages)) for h in hooks]  # type: ignore[misc]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0
