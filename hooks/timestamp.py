"""Timestamp hook: append one timestamped line to a log file, to time the other hooks.

Contract (docs/hooks.md; any stage that runs in the runtime namespace: createRuntime,
createContainer, poststart, poststop; no arguments):

* Applies when ``TIMESTAMP_HOOK_LOGFILE`` is set (non-empty) in the container process env;
  otherwise exits 0 with a DEBUG line. The path is a host path (hooks resolve paths in the
  runtime's mount namespace), made absolute against the bundle dir if relative.
* Appends ``[<unix s.ns>] [<host>-<pid>] [hook] [INFO] Timestamp hook: <message>`` where the
  message is ``TIMESTAMP_HOOK_MESSAGE`` from the hook env (empty if unset), in one ``write(2)``
  with ``O_APPEND`` so concurrent hooks never interleave within a line.
* Exit 1 when the file cannot be written.

The clock is read before anything else after the interpreter started, so interleaving this hook
between others measures what those others cost (bench/hooks.py).
"""

from __future__ import annotations

import os
import sys
import time

_T0 = time.time_ns()  # before the imports below: as close to "this hook started" as we can get

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks._state import HookError, Log, exit_now, read_container, run_hook

__all__ = ["format_line", "main"]

HOOK = "timestamp"


def format_line(ns: int, host: str, pid: int, message: str) -> str:
    """The Sarus-compatible timestamp line for ``ns`` nanoseconds since the epoch."""
    return (f"[{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}] [{host}-{pid}] [hook] [INFO] "
            f"Timestamp hook: {message}\n")


def _run(log: Log) -> int:
    container = read_container()
    path = container.env.get("TIMESTAMP_HOOK_LOGFILE", "")
    if not path:
        log.debug("TIMESTAMP_HOOK_LOGFILE is unset in the container env: nothing to do")
        return 0
    path = os.path.join(container.state.bundle, path)  # an absolute path stays as it is
    line = format_line(_T0, os.uname().nodename, os.getpid(),
                       os.environ.get("TIMESTAMP_HOOK_MESSAGE", ""))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise HookError(f"cannot append to TIMESTAMP_HOOK_LOGFILE {path}: {exc.strerror}") from exc
    return 0


def main() -> int:
    """Console script ``hpc-hook-timestamp``: exit status 0 written or not applicable, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
