"""Run several of our Python hooks of one stage in one interpreter (the hook chain).

A hook's own work takes 1-5 ms; starting the interpreter for it takes ~10 ms. So when the
engine finds consecutive hooks.d entries of one stage that all run one of *our* hook modules
with the same interpreter (``python -I -S <this dir>/<hook>.py``), it replaces them in
config.json by one entry running this module (engine/runtime/hookconfig.py, ``mergeHooks``).
That entry's environment has one variable, ``HPC_EXEC_HOOK_CHAIN``: a JSON list of
``{"module": ..., "args": [...], "env": [...], "timeout": seconds or null}`` in hooks.d
order (``args``: what followed the module file in the entry's args).

For each hook, in order, this program forks; the child gets the OCI state on its stdin, exactly
the environment of its hooks.d entry, imports its module and runs ``main()``, as if runc had
started it. So a hook that switches uid, changes directory or installs signal handlers cannot
affect the next one, and each hook's timeout still applies to it alone (the child is killed
with SIGKILL when it runs over). The first hook that fails stops the chain with its status,
as runc stops at the first failing hook; its stderr (runc shows it) is the hook's own.

Standard library only, cheap to import: this is what runs on every container start.
"""

from __future__ import annotations

import os
import select
import signal
import sys

if not __package__:  # run as a file, like the hooks themselves (docs/hooks.md)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks import HOOKS
from hpc_exec.hooks._state import exit_now, load_json

ENV_NAME = "HPC_EXEC_HOOK_CHAIN"
TIMED_OUT = 124  # the status reported for a hook killed on its timeout (coreutils' timeout)
__all__ = ["ENV_NAME", "ChainError", "Link", "main", "parse_chain"]


class ChainError(Exception):
    pass


Link = tuple[str, list[str], list[str], float | None]  # module, args, env, timeout


def parse_chain(text: str) -> list[Link]:
    """Validate ``HPC_EXEC_HOOK_CHAIN``: [(module, args, env, timeout)], modules only ours."""
    try:
        items = load_json(text)
    except ValueError as exc:
        raise ChainError(f"{ENV_NAME} is not JSON: {exc}") from exc
    if not isinstance(items, list) or not items:
        raise ChainError(f"{ENV_NAME} must be a non-empty list")
    modules = set(HOOKS.values())
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ChainError(f"{ENV_NAME}[{i}] is not an object")
        module, timeout = item.get("module"), item.get("timeout")
        args, env = item.get("args", []), item.get("env", [])
        if module not in modules:
            raise ChainError(f"{ENV_NAME}[{i}]: {module!r} is not a hook module of hpc-exec")
        for name, value in (("args", args), ("env", env)):
            if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                raise ChainError(f"{ENV_NAME}[{i}].{name} must be a list of strings")
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ChainError(f"{ENV_NAME}[{i}].timeout must be a positive number")
        out.append((str(module), list(args), list(env),
                    None if timeout is None else float(timeout)))
    return out


def _child(module: str, args: list[str], env: list[str], state_fd: int) -> None:
    """In the forked child: become the hook (never returns)."""
    status = 1
    try:
        os.dup2(state_fd, 0)
        os.close(state_fd)
        os.environ.clear()
        for entry in env:
            name, sep, value = entry.partition("=")
            if sep and name:
                os.environ[name] = value
        sys.argv = [os.path.join(os.path.dirname(os.path.abspath(__file__)), module + ".py"),
                    *args]
        import importlib

        status = int(importlib.import_module(f"hpc_exec.hooks.{module}").main())
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - report, never fall back into the chain
        sys.stderr.write(f"hook chain: {module}: unexpected {type(exc).__name__}: {exc}\n")
    exit_now(status)


def _wait(pid: int, timeout: float | None) -> int:
    """The child's exit status; SIGKILL and TIMED_OUT when it outlives ``timeout``."""
    pidfd = os.pidfd_open(pid)
    try:
        ready = select.select([pidfd], [], [], timeout)[0]
    finally:
        os.close(pidfd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # SIGKILLed: this returns at once
        return TIMED_OUT
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)


def _run(state: bytes, module: str, args: list[str], env: list[str],
         timeout: float | None) -> int:
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(write_end)
        _child(module, args, env, read_end)
    os.close(read_end)
    try:
        view = memoryview(state)
        while view:  # the hook reads all of its stdin first: no deadlock for a large state
            view = view[os.write(write_end, view):]
    except BrokenPipeError:
        pass  # the hook did not read its state; its status says how it went
    finally:
        os.close(write_end)
    status = _wait(pid, timeout)
    if status == TIMED_OUT:
        sys.stderr.write(f"hook chain: {module}: killed after its timeout of {timeout:g} s\n")
    return status


def main() -> int:
    try:
        chain = parse_chain(os.environ.get(ENV_NAME, ""))
    except ChainError as exc:
        sys.stderr.write(f"hook chain: {exc}\n")
        return 1
    chunks = []
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    state = b"".join(chunks)
    for module, args, env, timeout in chain:
        status = _run(state, module, args, env, timeout)
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    exit_now(main())
