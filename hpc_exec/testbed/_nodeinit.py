"""Entry of one testbed node, run as the first process of a fresh mount+UTS namespace.

``unshare --mount --uts --propagation slave -- python -m hpc_exec.testbed._nodeinit
--hostname node1 --bind SRC:DST ... -- slurmd ...`` bind-mounts the node's private spool and
pid-file directories over the paths slurm.conf names, sets the node's hostname, then execs the
command (so the recorded pid is slurmd itself). The mounts exist only in this namespace and
vanish with it; nothing is mounted on the host.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from hpc_exec import process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpc_exec.testbed._nodeinit")
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DST")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to exec is required after --")
    for spec in args.bind:
        src, _, dst = spec.partition(":")
        process.run(["mount", "--bind", src, dst], timeout=30, desc=f"binding {src} on {dst}")
    socket.sethostname(args.hostname)
    exe = process.require(command[0])
    os.execv(exe, [exe, *command[1:]])
    return 127  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
