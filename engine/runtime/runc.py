"""The runc driver: argv for ``runc run`` and the parser of runc's JSON log (pure).

``runc run`` exits 1 both when runc itself fails and when the container's process exits 1, so
runc runs with ``--log FILE --log-format json``: an entry at level ``error`` or ``fatal``
means runc failed (the message says why), and no such entry means the status is the
container's own.

runc's state (``--root``, :func:`state_root`) is on the host, per user, as Sarus keeps it in
``/run/runc/<uid>``: ``hpc-exec ps`` lists the containers there and ``hpc-exec kill NAME``
signals one (``run --name NAME``; a default name otherwise). Beside each container's state,
a marker names the engine that runs it, so that what a killed step leaves is found and
removed (:func:`sweep`). A rootless user whose state root another user took first still runs
containers, with their state in the run's private bundle, unseen by ``ps``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import InvalidInput

__all__ = ["check_name", "claim", "default_name", "delete_argv", "engine_alive", "find_runc",
           "kill_argv", "list_argv", "log_errors", "make_state_root", "release", "remove",
           "run_argv", "state_argv", "state_root", "sweep"]

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
    """runc's ``--root`` for this user on this node, on the host (call it outside any
    namespace of ours): ``/run/hpc-exec/runc`` as root; rootless ``/tmp/hpc-exec-runc-<uid>``,
    the same from a batch job and from a login shell (``/run/user/<uid>`` exists only in a
    login session, and logind removes it at the last logout)."""
    if not rootless:
        return Path("/run/hpc-exec/runc")
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
                            "only you can write", hint=f"its owner must remove {root}")
    return root


# -- which engine holds which name ----------------------------------------------------------
# Beside runc's state directory of each container, ``<root>/<name>.engine`` says which engine
# process (pid and start time) runs it. The engine creates it before runc starts (O_EXCL: the
# name is taken atomically) and removes it when runc is done; its watchdog removes it when the
# engine is killed. A marker whose engine is gone (the whole step was SIGKILLed, watchdog
# included) is a leftover: :func:`sweep` deletes the container's state and the marker.

ENGINE_SUFFIX = ".engine"


def _marker(root: Path, name: str) -> Path:
    return root / f"{name}{ENGINE_SUFFIX}"


def engine_alive(root: Path, name: str) -> bool:
    """True while the engine that took ``name`` runs (pid and start time both match)."""
    try:
        pid_text, start_text = _marker(root, name).read_text().split()
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        return False
    st = process.proc_stat(pid)
    return st is not None and st.starttime == start and st.state not in ("Z", "X")


def claim(root: Path, name: str, runc_path: str, rootless: bool) -> None:
    """Take ``name`` for this process; InvalidInput if a running engine holds it. A name
    whose engine is gone is freed first (its container's state deleted)."""
    me = process.proc_stat(os.getpid())
    identity = f"{os.getpid()} {me.starttime if me else 0}\n".encode()
    for attempt in (0, 1):
        try:
            fd = os.open(_marker(root, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            if attempt or engine_alive(root, name):
                raise InvalidInput(f"container name {name!r} is in use ('hpc-exec ps' lists "
                                   "the containers)") from None
            remove(root, name, runc_path, rootless)
            continue
        try:
            os.write(fd, identity)
        finally:
            os.close(fd)
        return


def release(root: Path, name: str) -> None:
    """Give ``name`` back (runc has removed its own state when ``runc run`` returned)."""
    _marker(root, name).unlink(missing_ok=True)


def remove(root: Path, name: str, runc_path: str, rootless: bool) -> None:
    """Delete what a dead engine left of container ``name``: runc's state (and cgroups, by
    ``runc delete --force``), then the marker."""
    if (root / name).exists():
        process.run(delete_argv(runc_path, root, rootless, name), timeout=30, check=False,
                    desc=f"removing the state of container {name}, whose engine is gone")
        if (root / name).exists():
            import shutil

            shutil.rmtree(root / name, ignore_errors=True)
    _marker(root, name).unlink(missing_ok=True)


def sweep(root: Path, runc_path: str, rootless: bool) -> None:
    """Remove the leftovers of every container of ``root`` whose engine is gone."""
    try:
        names = [n[:-len(ENGINE_SUFFIX)] for n in os.listdir(root) if n.endswith(ENGINE_SUFFIX)]
    except OSError:
        return
    for name in names:
        if not engine_alive(root, name):
            remove(root, name, runc_path, rootless)


def _global(runc: str, root: Path, rootless: bool) -> list[str]:
    return [runc, "--root", str(root), *(["--rootless", "true"] if rootless else [])]


def list_argv(runc: str, root: Path, rootless: bool) -> list[str]:
    return [*_global(runc, root, rootless), "list"]


def state_argv(runc: str, root: Path, rootless: bool, name: str) -> list[str]:
    return [*_global(runc, root, rootless), "state", name]


def kill_argv(runc: str, root: Path, rootless: bool, name: str, signal: str) -> list[str]:
    return [*_global(runc, root, rootless), "kill", name, signal]


def delete_argv(runc: str, root: Path, rootless: bool, name: str) -> list[str]:
    return [*_global(runc, root, rootless), "delete", "--force", name]


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
