"""``hpc-exec ps`` and ``hpc-exec kill NAME``: the running containers, as ``sarus ps|kill``.

``ps`` prints runc's table of this user's containers (runc's state root: see
:func:`hpc_exec.engine.runtime.runc.state_root`); ``kill`` sends a signal (SIGHUP by default,
as Sarus does) to the container that ``hpc-exec run --name NAME`` started, whose ``run`` then
exits with the container's status. An unknown name is exit 110.
"""

from __future__ import annotations

import argparse
from typing import Any

from hpc_exec.cli import Once, nonempty

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ps", help="list the running containers",
                       description="List your containers (hpc-exec run --name sets a name).")
    p.set_defaults(handler=_ps)
    p = sub.add_parser("kill", help="kill a running container by name",
                       description="Send SIGNAL (default SIGHUP, as Sarus) to the container "
                       "NAME; its 'hpc-exec run' ends with the container's status.")
    p.add_argument("-s", "--signal", default="SIGHUP", action=Once, type=nonempty,
                   help="the signal, by name or number (default: SIGHUP)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_kill)


def _ps(_args: argparse.Namespace) -> int:
    from hpc_exec.engine.runtime.api import containers

    print(containers(), end="")
    return 0


def _kill(args: argparse.Namespace) -> int:
    from hpc_exec.engine.runtime.api import kill

    kill(args.name, args.signal)
    return 0
