"""``hpc-exec testbed up|status|down|env``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "dispatch"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from exc
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not between 1 and 65535")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "testbed", help="a real mini-cluster (munge, Slurm, registries) on this machine",
        description="Start, inspect and stop a local Slurm cluster of N namespaced nodes and two "
        "OCI registries on 127.0.0.1. State lives in --state-dir, else $HPC_EXEC_TESTBED_DIR, "
        "else /var/lib/hpc-exec-testbed. Needs root.")
    p.add_argument("--state-dir", type=Path, default=None, help="testbed state directory")
    tsub = p.add_subparsers(dest="testbed_command", metavar="ACTION")
    tsub.required = True
    u = tsub.add_parser("up", help="start what is not running (idempotent)")
    u.add_argument("--nodes", type=int, default=3, help="number of slurmd nodes (default 3)")
    u.add_argument("--slurmctld-port", type=_port, default=None, help="default: a free port")
    u.add_argument("--registry-port", type=_port, default=None, help="default: a free port")
    u.add_argument("--private-registry-port", type=_port, default=None,
                   help="default: a free port")
    u.add_argument("--no-images", action="store_true",
                   help="do not build and push the test images")
    tsub.add_parser("status", help="show what is running; exit 0 only if all of it is")
    d = tsub.add_parser("down", help="stop everything 'up' started")
    d.add_argument("--purge", action="store_true",
                   help="also delete the state dir, including the cached image builds")
    tsub.add_parser("env", help="print shell export lines (eval \"$(hpc-exec testbed env)\")")
    p.set_defaults(handler=dispatch)


def dispatch(args: argparse.Namespace) -> int:
    import hpc_exec.testbed as tb

    action = args.testbed_command
    if action == "up":
        tb.up(args.state_dir, nodes=args.nodes, slurmctld_port=args.slurmctld_port,
              registry_port=args.registry_port,
              private_registry_port=args.private_registry_port, images=not args.no_images,
              progress=lambda m: print(f"testbed: {m}", file=sys.stderr))
        st = tb.status(args.state_dir)
        print(f"testbed: up in {st.root} ({', '.join(st.running)})", file=sys.stderr)
        return 0
    if action == "status":
        st = tb.status(args.state_dir)
        if st.state is None:
            print(f"testbed: no testbed in {st.root}")
            return 1
        for name, ok in st.running.items():
            print(f"{name:20} {'running' if ok else 'stopped'}")
        return 0 if st.healthy else 1
    if action == "down":
        stopped = tb.down(args.state_dir, purge=args.purge)
        print(f"testbed: stopped {', '.join(stopped) if stopped else 'nothing'}",
              file=sys.stderr)
        return 0
    if action == "env":
        for key, value in tb.env(args.state_dir).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    raise AssertionError(action)
