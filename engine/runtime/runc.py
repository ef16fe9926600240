"""The runc driver: argv for ``runc run`` and the parser of runc's JSON log (pure).

``runc run`` exits 1 both when runc itself fails and when the container's process exits 1, so
runc runs with ``--log FILE --log-format json``: an entry at level ``error`` or ``fatal``
means runc failed (the message says why), and no such entry means the status is the
container's own. runc's state (``--root``) lives in the bundle's tmpfs, so it vanishes with
the mount namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

from hpc_exec import process

__all__ = ["find_runc", "log_errors", "run_argv"]


def find_runc(configured: Path | None) -> str:
    if configured is not None:
        return str(configured)
    return process.require("runc")


def run_argv(runc: str, *, bundle: Path, container_id: str, state_dir: Path, log_path: Path,
             pid_file: Path, rootless: bool, preserve_fds: int = 0) -> list[str]:
    argv = [runc, "--root", str(state_dir), "--log", str(log_path), "--log-format", "json"]
    if rootless:
        argv += ["--rootless", "true"]
    # --no-new-keyring: a session keyring per container would count against the user's key
    # quota on a node running many tasks, and gives nothing here.
    argv += ["run", "--bundle", str(bundle), "--pid-file", str(pid_file), "--no-new-keyring"]
    if preserve_fds:  # our fds 3 .. 3+N-1 become the container's (the PMI socket)
        argv += ["--preserve-fds", str(preserve_fds)]
    argv.append(container_id)
    return argv


def log_errors(text: str) -> list[str]:
    """The messages of the ``error``/``fatal`` entries of a runc JSON log, in order."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            out.append(str(entry.get("msg", "")).strip())
    return out
