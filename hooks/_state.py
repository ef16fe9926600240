"""Shared plumbing of the hook programs: OCI state, bundle config, env, passwd, logging, time.

Contract (docs/hooks.md, shared/STYLE.md habit 9):

* runc runs a hook with the OCI state JSON on stdin (``ociVersion``, ``id``, ``status``, ``pid``,
  ``bundle``, ``annotations``) and with exactly the ``env`` of its hooks.d entry, nothing else.
  :func:`read_container` parses the state and loads ``<bundle>/config.json``; a hook's settings
  come from that hook env (``os.environ``) and from the container's process env
  (:attr:`Container.env`).
* A hook that does not apply exits 0 after a DEBUG line; a hook that fails raises
  :class:`HookError`, which :func:`run_hook` prints as one ERROR line on stderr and turns into
  exit status 1. Every wait is bounded by a :class:`Deadline`.
* Log lines go to stderr as ``[<unix s.ns>] [<host>-<pid>] [<hook>] [<LEVEL>] <message>`` (the
  timestamp hook's format). ``HOOK_LOG_LEVEL`` (debug, info, warning, error; default info)
  in the hook env filters them.

Hooks run on every container start, so this module imports only cheap standard-library modules:
no ``json`` (it pulls in ``re``), ``typing``, ``dataclasses``, ``pathlib``, ``logging`` or
``subprocess`` at import time. JSON is decoded with the C scanner behind :mod:`json`
(:func:`load_json`), which costs about a tenth of importing :mod:`json` on a loaded node.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing costs ~4 ms to import; mypy treats this name as True
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import IO, Any, ClassVar

__all__ = [
    "Container",
    "Deadline",
    "HookError",
    "Log",
    "PasswdEntry",
    "State",
    "env_seconds",
    "exit_now",
    "load_json",
    "parse_env",
    "passwd_entry",
    "read_container",
    "rootless_caller",
    "run_hook",
    "run_program",
]


class HookError(Exception):
    """A failure the hook reports on stderr (one line) before exiting with status 1."""


# --- JSON without importing json/re -----------------------------------------------------------

class _ScanContext:
    """The attributes ``_json.make_scanner`` reads from a JSONDecoder (CPython's C scanner)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: ClassVar[dict[str, str]] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)  # NaN, Infinity, -Infinity as json.loads does


def load_json(text: str) -> Any:
    """Decode one JSON document like :func:`json.loads` (ValueError when invalid)."""
    try:
        import _json

        scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    except (ImportError, AttributeError):  # not CPython: pay for the json module
        import json

        return json.loads(text)
    ws = " \t\n\r"
    start = len(text) - len(text.lstrip(ws))
    try:
        obj, end = scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at character {exc.value}") from exc
    finally:
        _ScanContext.memo.clear()
    if text[end:].strip(ws):
        raise ValueError(f"extra data after JSON at character {end}")
    return obj


# --- OCI state and bundle ---------------------------------------------------------------------

class State:
    """The OCI state a runtime passes to a hook on stdin (OCI runtime spec, "State")."""

    __slots__ = ("annotations", "bundle", "id", "oci_version", "pid", "status")

    def __init__(self, oci_version: str, id: str, status: str, pid: int, bundle: str,
                 annotations: dict[str, str]) -> None:
        self.oci_version = oci_version
        self.id = id
        self.status = status
        self.pid = pid
        self.bundle = bundle
        self.annotations = annotations

    @classmethod
    def parse(cls, text: str) -> State:
        try:
            data = load_json(text)
        except ValueError as exc:
            raise HookError(f"the OCI state on stdin is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HookError("the OCI state on stdin is not a JSON object")
        bundle = data.get("bundle")
        if not isinstance(bundle, str) or not os.path.isabs(bundle):
            raise HookError(f"the OCI state has no absolute 'bundle' path: {bundle!r}")
        pid = data.get("pid", 0)
        if not isinstance(pid, int) or pid < 0:
            raise HookError(f"the OCI state has an invalid 'pid': {pid!r}")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise HookError("the OCI state's 'annotations' is not an object")
        return cls(str(data.get("ociVersion", "")), str(data.get("id", "")),
                   str(data.get("status", "")), pid, bundle,
                   {str(k): str(v) for k, v in annotations.items()})


def parse_env(entries: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` (config.json ``process.env``) as a dict; later entries win."""
    env: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep and key:
            env[key] = value
    return env


class Container:
    """What a hook knows about its container: the state plus the bundle's config.json."""

    __slots__ = ("config", "env", "gid", "rootfs", "rootless", "state", "uid")

    def __init__(self, state: State, config: dict[str, Any]) -> None:
        self.state = state
        self.config = config
        process = config.get("process") or {}
        self.env = parse_env([str(e) for e in process.get("env") or []])
        user = process.get("user") or {}
        #: the container user's uid and gid as passwd files name them (the host's ids)
        self.uid = int(user.get("uid", 0))
        self.gid = int(user.get("gid", 0))
        #: True in a rootless container: the hook runs as uid 0 of the engine's user
        #: namespace, which is the caller (see :attr:`owner`)
        self.rootless = False
        if self.uid == 0:
            caller = rootless_caller()
            if caller is not None:
                self.uid, self.gid = caller
                self.rootless = True
        root = (config.get("root") or {}).get("path") or "rootfs"
        self.rootfs = os.path.normpath(os.path.join(state.bundle, str(root)))

    @property
    def owner(self) -> tuple[int, int]:
        """The ids to give files made for the container user, in the hook's own namespace:
        rootless, the caller is uid 0 there."""
        return (0, 0) if self.rootless else (self.uid, self.gid)

    @property
    def annotations(self) -> dict[str, str]:
        """The state's annotations (runc copies config.json's there)."""
        return self.state.annotations or {
            str(k): str(v) for k, v in (self.config.get("annotations") or {}).items()}

    def in_rootfs(self, path: str) -> str:
        """Host path of the absolute container ``path`` (not following symlinks)."""
        return os.path.join(self.rootfs, path.lstrip("/"))


def _single_map(path: str) -> int | None:
    """The host id that id 0 maps to, if ``path`` (a uid_map/gid_map) maps only that one id."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    fields = [line.split() for line in lines if line.strip()]
    if len(fields) == 1 and len(fields[0]) == 3 and fields[0][0] == "0" and fields[0][2] == "1":
        return int(fields[0][1])
    return None


def rootless_caller() -> tuple[int, int] | None:
    """The caller's host uid and gid when this process runs in hpc-exec's rootless user
    namespace (one id, 0, mapped onto a non-root host id), else None. The kernel's maps
    say so; nothing the container or its annotations claim is trusted for it."""
    uid = _single_map("/proc/self/uid_map")
    if uid is None or uid == 0:
        return None
    gid = _single_map("/proc/self/gid_map")
    return (uid, gid if gid is not None else uid)


def read_container(stdin: IO[str] | None = None) -> Container:
    """Parse the OCI state on ``stdin`` (default sys.stdin) and load the bundle's config.json."""
    state = State.parse((stdin or sys.stdin).read())
    path = os.path.join(state.bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = load_json(f.read())
    except OSError as exc:
        raise HookError(f"cannot read the bundle's config.json {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise HookError(f"the bundle's config.json {path} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise HookError(f"the bundle's config.json {path} is not a JSON object")
    return Container(state, config)


# --- passwd -----------------------------------------------------------------------------------

class PasswdEntry:
    """One line of a passwd(5) file."""

    __slots__ = ("gid", "home", "name", "shell", "uid")

    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell


def passwd_entry(passwd_file: str, uid: int) -> PasswdEntry:
    """The first entry of ``passwd_file`` with user id ``uid`` (HookError if none)."""
    try:
        with open(passwd_file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise HookError(f"cannot read PASSWD_FILE {passwd_file}: {exc.strerror}") from exc
    for line in lines:
        fields = line.split(":")
        if len(fields) < 7 or line.startswith(("#", "+", "-")):
            continue
        try:
            entry_uid, entry_gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        if entry_uid == uid and fields[0]:
            return PasswdEntry(fields[0], entry_uid, entry_gid, fields[5], fields[6])
    raise HookError(f"user id {uid} is not in PASSWD_FILE {passwd_file}")


# --- settings and time ------------------------------------------------------------------------

def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive duration in seconds from ``env[name]``, or ``default`` when unset/empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise HookError(f"{name}={raw!r} is not a number of seconds") from exc
    if not value > 0 or value == float("inf"):
        raise HookError(f"{name}={raw!r} must be a positive number of seconds")
    return value


class Deadline:
    """A point on the monotonic clock ``seconds`` from now."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at


def run_program(argv: list[str], *, timeout: float, what: str) -> str:
    """Run a trusted host program (an absolute path from the hook env) and return its output.

    The hooks' counterpart of hpc_exec.process.run, which they may not import: argv only, stdin
    from /dev/null, a timeout that kills the program, stdout+stderr returned, and a HookError
    naming ``what`` with the output's tail when it fails.
    """
    import subprocess

    if not os.path.isabs(argv[0]):
        raise HookError(f"{what}: {argv[0]!r} must be an absolute path")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HookError(f"{what}: {argv[0]} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise HookError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise HookError(f"{what}: {' '.join(argv)} exited with status {done.returncode}: "
                        f"{output.strip()[-1000:]}")
    return output


# --- logging ----------------------------------------------------------------------------------

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    """Timestamped lines on stderr, filtered by ``HOOK_LOG_LEVEL`` from the hook env."""

    __slots__ = ("hook", "stream", "threshold")

    def __init__(self, hook: str, stream: IO[str] | None = None) -> None:
        self.hook = hook
        self.stream = stream
        level = os.environ.get("HOOK_LOG_LEVEL", "info").strip().lower()
        self.threshold = _LEVELS.get(level, 20)

    def _emit(self, level: str, message: str) -> None:
        if _LEVELS[level] < self.threshold:
            return
        ns = time.time_ns()
        line = (f"[{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}] "
                f"[{os.uname().nodename}-{os.getpid()}] [{self.hook}] [{level.upper()}] "
                f"{message}\n")
        stream = self.stream or sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing better to do
            pass

    def debug(self, message: str) -> None:
        self._emit("debug", message)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def error(self, message: str) -> None:
        self._emit("error", message)


def exit_now(status: int) -> None:
    """Exit a hook run as a program without the interpreter's finalisation.

    Finalisation (module teardown, garbage collection) costs a hook ~1-2 ms of its ~15 ms; a
    hook's files are closed as it goes, and stdio is flushed here. ``__main__`` blocks only:
    main() itself returns the status, for the console scripts and the tests.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def run_hook(name: str, body: Callable[[Log], int]) -> int:
    """Run ``body(log)`` and map failures to exit status 1 with one ERROR line on stderr."""
    log = Log(name)
    try:
        return body(log)
    except HookError as exc:
        log.error(str(exc))
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, plus the traceback at debug level
        log.error(f"unexpected {type(exc).__name__}: {exc}")
        if log.threshold <= _LEVELS["debug"]:
            import traceback

            traceback.print_exc()
        return 1
