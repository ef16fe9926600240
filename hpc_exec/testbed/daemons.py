"""Starting, checking and stopping the testbed's daemons, and picking their ports.

A daemon is started with :func:`hpc_exec.process.spawn` (own session, log file under the state
dir) and recorded by pid + kernel start time in the testbed state, so ``down`` stops exactly the
processes ``up`` started, even after a crash and a pid wrap-around.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from hpc_exec import process
from hpc_exec.errors import InvalidInput, TestbedError
from hpc_exec.testbed.state import ProcRecord, TestbedLayout, TestbedState

__all__ = ["check_port_free", "pick_free_port", "start", "stop", "wait_until"]

log = logging.getLogger(__name__)


def check_port_free(port: int, what: str) -> None:
    """Raise a one-line InvalidInput naming the port if 127.0.0.1:port cannot be bound."""
    if not 1 <= port <= 65535:
        raise InvalidInput(f"{what} port {port} is not between 1 and 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidInput(
                    f"{what} port {port} on 127.0.0.1 is already in use",
                    hint="stop what uses it, or choose another port (see 'hpc-exec testbed up "
                    "--help')",
                ) from exc
            raise InvalidInput(f"{what} port {port} cannot be used: {exc.strerror}") from exc


def pick_free_port(taken: set[int]) -> int:
    """A port that is free now on 127.0.0.1 and not in ``taken``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise TestbedError("could not find a free port on 127.0.0.1")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log_path: object = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``check`` until true; TestbedError naming ``what`` (and its log) on timeout or death."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if check():
            return
        where = f"; see {log_path}" if log_path else ""
        if alive is not None and not alive():
            raise TestbedError(f"{what} exited during start-up{where}")
        if time.monotonic() > deadline:
            raise TestbedError(f"{what} not ready after {timeout:g} s{where}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def start(
    state: TestbedState,
    layout: TestbedLayout,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
) -> ProcRecord:
    """Spawn a daemon, record it in ``state`` and save the state at once (crash-safe)."""
    log_path = layout.log_file(name)
    proc = process.spawn(argv, desc=f"starting {name}", log_path=log_path, env=env)
    # Give an immediately failing daemon the chance to fail before we record it.
    time.sleep(0.05)
    if proc.poll() is not None:
        raise TestbedError(f"{name} exited at once (status {proc.returncode}); see {log_path}")
    rec = state.record(name, proc.pid)
    state.save(layout)
    return rec


def stop(rec: ProcRecord, *, timeout: float = 10.0) -> None:
    """Stop one recorded daemon if it is still the process we started."""
    if not rec.alive():
        return
    log.info("stopping %s (pid %d)", rec.name, rec.pid)
    if not process.terminate(rec.pid, timeout=timeout):
        raise TestbedError(f"{rec.name} (pid {rec.pid}) did not stop")
