"""The runc driver: argv for ``runc run`` and the parser of runc's JSON log (pure).

``runc run`` exits 1 both when runc itself fails and when the container's process exits 1, so
runc runs with ``--log FILE --log-format json``: an entry at level ``error`` or ``fatal``
means runc failed (the message says why), and no such entry means the status is the
container's own.

runc's state (``--root``, :func:`state_root`) is on the host, per user, as Sarus keeps it in
``/run/runc/<uid>``: ``hpc-exec ps`` lists the containers there and ``hpc-exec kill NAME``
signals one (``run --name NAME``; a default name otherwise).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import InvalidInput

__all__ = ["check_name", "default_name", "find_runc", "kill_argv", "list_argv", "log_errors",
           "make_state_root", "run_argv", "state_argv", "state_root"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")  # runc's container id, bounded


def check_name(name: str) -> str:
    """``name`` if runc takes it as a container id (InvalidInput naming it otherwise)."""
    if not _NAME.match(name):
        raise InvalidInput(f"invalid container name {name!r} (letters, digits, '_', '.', '+', "
                           "'-'; at most 128, starting with a letter or digit)")
    return name


def default_name() -> str:
    """The name of a container started without ``--name`` (unique on this node)."""
    return f"hpc-exec-{os.getpid()}-{os.urandom(3).hex()}"


def state_root(rootless: bool) -> Path:
    """runc's ``--root`` for this user, on the host (call it outside any namespace of ours):
    ``/run/hpc-exec/runc`` as root; rootless ``/run/user/<uid>/hpc-exec-runc`` when that
    runtime directory exists, else ``/tmp/hpc-exec-runc-<uid>`` (see :func:`make_state_root`)."""
    if not rootless:
        return Path("/run/hpc-exec/runc")
    runtime_dir = Path(f"/run/user/{os.getuid()}")
    if os.access(runtime_dir, os.W_OK | os.X_OK):
        return runtime_dir / "hpc-exec-runc"
    return Path(f"/tmp/hpc-exec-runc-{os.getuid()}")


def make_state_root(root: Path) -> Path:
    """Create ``root`` (mode 0700) if missing and check it is ours: a directory in a shared
    place such as /tmp that another user made first is refused (SecurityError)."""
    import stat

    from hpc_exec.errors import RuntimeFailure, SecurityError

    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(root)
    except OSError as exc:
        raise RuntimeFailure(f"cannot create runc's state directory {root}: "
                             f"{exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SecurityError(f"runc's state directory {root} is not a directory of yours that "
                            "only you can write", hint=f"remove {root}")
    return root


def _global(runc: str, root: Path, rootless: bool) -> list[str]:
    return [runc, "--root", str(root), *(["--rootless", "true"] if rootless else [])]


def list_argv(runc: str, root: Path, rootless: bool) -> list[str]:
    return [*_global(runc, root, rootless), "list"]


def state_argv(runc: str, root: Path, rootless: bool, name: str) -> list[str]:
    return [*_global(runc, root, rootless), "state", name]


def kill_argv(runc: str, root: Path, rootless: bool, name: str, signal: str) -> list[str]:
    return [*_global(runc, root, rootless), "kill", name, signal]


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
