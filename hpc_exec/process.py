"""The one way hpc-exec runs external programs.

Contract (shared/STYLE.md habit 5):

* argv lists only, never a shell string;
* every call that waits for a program to finish has a timeout, and on expiry the whole process
  group is killed. The exceptions are said where they are: :func:`spawn` starts a daemon that
  the caller stops with :func:`terminate`; :func:`launch` starts a program the caller waits for
  (runc, whose run is as long as the container's); :func:`foreground` waits for a container
  run, whose timeout is the caller's choice (None: as long as the container runs);
* stdin is the null device unless ``input`` is given;
* output is captured and shown only on failure, as :class:`~hpc_exec.errors.CommandFailed`
  with the stderr tail;
* the command is logged at DEBUG with :class:`Secret` arguments redacted;
* a program that is not installed raises :class:`~hpc_exec.errors.MissingDependency` naming
  the Debian package that provides it.

:func:`spawn` starts long-running daemons (the testbed's) in their own session and returns the
``Popen``; :func:`run` with ``capture=False`` lets the child inherit our stdio (``runc run``).
:func:`feed` streams data into a program's stdin (a tar into ``tar2sqfs``) under the same rules.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess  # noqa: TID251 - this module is the one wrapper
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

from hpc_exec.errors import CommandFailed, CommandTimeout, MissingDependency

__all__ = ["DEBIAN_PACKAGES", "FORWARDED", "PIPE", "Completed", "ProcStat", "Secret", "alive",
           "feed", "foreground", "forwarded_signals", "installed_program", "launch", "proc_stat",
           "require", "run", "session_members", "spawn", "terminate", "which"]

PIPE = subprocess.PIPE  # for launch(stdout=...): the caller reads the child's output

log = logging.getLogger(__name__)

# Which Debian package provides each program we call; named in MissingDependency errors.
DEBIAN_PACKAGES: dict[str, str] = {
    "munged": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "srun": "slurm-client",
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "sinfo": "slurm-client",
    "docker-registry": "docker-registry",
    "runc": "runc",
    "tar2sqfs": "squashfs-tools-ng",
    "sqfs2tar": "squashfs-tools-ng",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "squashfuse": "squashfuse",
    "squashfuse_ll": "squashfuse",
    "fuse-overlayfs": "fuse-overlayfs",
    "fusermount3": "fuse3",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "htpasswd": "apache2-utils",
    "openssl": "openssl",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "chroot": "coreutils",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "tini": "tini",
    "newuidmap": "uidmap",
    "mpicc": "libmpich-dev",
    "zstd": "zstd",
}

_TAIL = 4000  # characters of stderr kept for error messages


class Secret(str):
    """A string that is redacted whenever a command line is logged or shown (pip's HiddenText)."""

    def redacted(self) -> str:
        return "****"


def _redacted(argv: Sequence[str]) -> list[str]:
    return [a.redacted() if isinstance(a, Secret) else str(a) for a in argv]


def _prepare(argv: Sequence[str], verb: str, desc: str) -> tuple[str, list[str], list[str]]:
    """(executable, argv as strings, argv with secrets redacted), logged at DEBUG redacted.

    Every entry point goes through here, so no caller can log or report a Secret by turning
    argv into plain strings first."""
    safe = _redacted(argv)
    plain = [str(a) for a in argv]
    exe = require(plain[0])
    log.debug("%s (%s): %s", verb, desc, shlex.join(safe))
    return exe, plain, safe


def require(program: str) -> str:
    """Absolute path of ``program`` on PATH (or the path itself), else MissingDependency."""
    if os.sep in program:
        if os.access(program, os.X_OK):
            return program
        found = None
    else:
        found = which(program) or which(program, "/usr/sbin:/sbin")
    if not found:
        raise MissingDependency(program, DEBIAN_PACKAGES.get(os.path.basename(program)))
    return found


def which(program: str, path: str | None = None) -> str | None:
    """The absolute path of the executable ``program`` in ``path`` (default $PATH), or None:
    shutil.which for a bare name, without importing shutil (every 'hpc-exec run' asks for
    runc, and shutil with its compression modules costs more than the search). Empty and
    relative entries of the path are skipped: the current directory is no place to find runc.
    """
    for directory in (os.environ.get("PATH", os.defpath) if path is None else path).split(
            os.pathsep):
        if not directory.startswith("/"):
            continue
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def installed_program(name: str, beside: Path | None = None) -> str | None:
    """The console script ``name`` of this installation: the one next to this Python (or in
    ``beside``), so a job runs the same install from the shared file system, else the one on
    PATH; None if neither exists."""
    import sys

    candidate = (beside or Path(sys.executable).parent) / name
    return str(candidate) if os.access(candidate, os.X_OK) else which(name)


class Completed(NamedTuple):  # not a dataclass: keeps dataclasses off the run path
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _kill_group(proc: subprocess.Popen[bytes]) -> str:
    """SIGKILL the child's process group, reap it, close its pipes; return its stderr tail."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        _, err = proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError):
        err = None
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
    return err.decode(errors="replace")[-_TAIL:] if err else ""


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    desc: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    cwd: str | Path | None = None,
    capture: bool = True,
    stdout: IO[bytes] | None = None,
) -> Completed:
    """Run ``argv`` to completion and return its exit status and output.

    ``desc`` is a short human phrase ("mounting squashfs image") used in errors.
    With ``capture=False`` the child inherits stdio (or writes stdout to ``stdout``) and only
    the exit status is returned. ``check`` raises CommandFailed on a non-zero exit.
    """
    exe, argv, safe = _prepare(argv, "running", desc)  # safe: what logs and errors may show
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.Popen(
            [exe, *argv[1:]],
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else stdout,
            stderr=subprocess.PIPE if capture else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            process_group=0,  # so a timeout can kill the program and everything it started
        )
    except FileNotFoundError as exc:  # cwd missing, or exe vanished between which and exec
        raise CommandFailed(desc, safe, 127, str(exc)) from exc
    try:
        out, err = proc.communicate(input=data, timeout=timeout)
    except subprocess.TimeoutExpired:  # its text holds the unredacted argv: not chained
        raise CommandTimeout(desc, safe, timeout, _kill_group(proc)) from None
    except BaseException:
        _kill_group(proc)
        raise
    stdout_s = out.decode(errors="replace") if out is not None else ""
    stderr_s = err.decode(errors="replace") if err is not None else ""
    if check and proc.returncode != 0:
        raise CommandFailed(desc, safe, proc.returncode, stderr_s[-_TAIL:])
    return Completed(safe, proc.returncode, stdout_s, stderr_s)


@contextmanager
def feed(
    argv: Sequence[str],
    *,
    timeout: float,
    desc: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Iterator[IO[bytes]]:
    """Start ``argv`` and yield its stdin; on exit close it and wait up to ``timeout`` s.

    stdout and stderr go to an anonymous temp file (no pipe to fill up) whose tail is shown in
    :class:`CommandFailed` on a non-zero exit. If the ``with`` body raises, or the wait times
    out, the program's process group is killed. A program that exits early makes writes raise
    BrokenPipeError; its exit status is then reported instead.
    """
    exe, argv, safe = _prepare(argv, "running", desc)
    import tempfile  # not at import: 'hpc-exec run' starts faster without it

    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(
            [exe, *argv[1:]], stdin=subprocess.PIPE, stdout=errf, stderr=errf,
            env=dict(env) if env is not None else None, cwd=cwd, process_group=0)
        assert proc.stdin is not None
        broken = False
        try:
            try:
                yield proc.stdin
            except BrokenPipeError:
                broken = True
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # its text holds the unredacted argv
                _kill_group(proc)
                raise CommandTimeout(desc, safe, timeout) from None
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode != 0 or broken:
            errf.seek(0, os.SEEK_END)
            errf.seek(max(0, errf.tell() - _TAIL))
            tail = errf.read().decode(errors="replace")
            raise CommandFailed(desc, safe, proc.returncode if proc.returncode else -13, tail)


def spawn(
    argv: Sequence[str],
    *,
    desc: str,
    log_path: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session, stdout+stderr appended to ``log_path``.

    The caller records ``proc.pid`` and stops it with :func:`terminate`.
    """
    exe, argv, _safe = _prepare(argv, "starting", desc)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [exe, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    # Daemons outlive the call; keep the handle so it is neither collected while the daemon
    # runs nor left a zombie when terminate() stops it from this same process.
    _DAEMONS[proc.pid] = proc
    return proc


_DAEMONS: dict[int, subprocess.Popen[bytes]] = {}


def terminate(pid: int, *, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to ``pid``, wait up to ``timeout`` s, then SIGKILL. True if it is gone.

    Only for processes we started ourselves and whose identity the caller has checked.
    """
    import time

    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie; reaps it if it is our child."""
    child = _DAEMONS.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _DAEMONS[pid]
        return False
    return alive(pid)


# -- /proc/<pid>/stat: the one parser ---------------------------------------------------------

class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` (proc(5)) that hpc-exec uses."""

    state: str  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks after boot: with the pid, identifies one process for good


def proc_stat(pid: int) -> ProcStat | None:
    """``pid``'s stat fields, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything, ')' included: the
    # fields we want come after the last ')'.
    fields = data.rsplit(b")", 1)[-1].split()
    try:
        return ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]),
                        int(fields[19]))
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is neither a zombie nor dead."""
    st = proc_stat(pid)
    return st is not None and st.state not in ("Z", "X")


def session_members(session: int) -> list[int]:
    """The pids whose session id is ``session``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st.session == session:
                out.append(int(entry))
    return out


def launch(
    argv: Sequence[str],
    *,
    desc: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    pass_fds: Sequence[int] = (),
    fd_map: Mapping[int, int] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    parent_death_signal: int | None = None,
    own_process_group: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child that shares our stdio (unless redirected) and our process group.

    For the foreground program of ``hpc-exec run`` (runc) and its helpers (squashfuse_ll). The
    caller waits for it, forwards signals to it by PID and stops it by PID.
    ``parent_death_signal`` is delivered to the child if we die first (PR_SET_PDEATHSIG), so a
    helper never outlives a SIGKILLed engine. ``own_process_group`` puts the child in a new
    process group of our session, so that a signal sent to our group (Ctrl-C on a terminal)
    reaches it only through the caller's forwarding, once.
    """
    exe, argv, _safe = _prepare(argv, "launching", desc)
    preexec = None
    remap = dict(fd_map or {})  # the child's fd -> our fd (dup2'd before exec)
    if parent_death_signal is not None or remap:
        sig = None if parent_death_signal is None else int(parent_death_signal)

        def preexec() -> None:
            if sig is not None:
                import ctypes

                ctypes.CDLL(None).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
            for target, source in remap.items():  # runs before close_fds keeps pass_fds
                if target != source:
                    os.dup2(source, target)

    try:
        return subprocess.Popen(
            [exe, *argv[1:]],
            stdin=None if stdout is None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            pass_fds=(*pass_fds, *remap),
            preexec_fn=preexec,
            process_group=0 if own_process_group else None,
        )
    except OSError as exc:
        raise CommandFailed(desc, _safe, 127, str(exc)) from exc


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


@contextmanager
def forwarded_signals(active: bool = True) -> Iterator[Callable[[subprocess.Popen[bytes]], None]]:
    """While in the block, the signals a job receives (:data:`FORWARDED`) go to the program
    handed to the callable it yields; those that came before it started are sent to it then,
    so none is lost between the handlers and the start. ``active=False`` (not the main
    thread, where Python cannot handle signals) installs nothing. The old handlers come back
    at the end."""
    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # signals that came before the program existed

    def forward(signum: int, _frame: object) -> None:
        if not started:
            pending.append(signum)
            return
        started[0].send_signal(signum)  # checks that it was not reaped (no pid reuse)

    def attach(proc: subprocess.Popen[bytes]) -> None:
        started.append(proc)
        for signum in pending:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED} if active else {}
    try:
        yield attach
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def foreground(
    argv: Sequence[str],
    *,
    desc: str,
    timeout: float | None = None,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> Completed:
    """Run a program in the foreground of a Python caller (a container run) and wait for it.

    Called from the main thread, the program gets a process group of its own and the signals
    a job receives (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are forwarded to it
    while we wait; the handlers are in place before it starts, so none is lost in between.
    Called from another thread (Python handles signals only in the main thread), it stays in
    our process group, so what is sent to the group (a terminal's Ctrl-C, ``kill -- -PGID``)
    reaches it directly. If the wait is interrupted (KeyboardInterrupt, any exception) or
    ``timeout`` expires, the program gets SIGTERM, then SIGKILL 10 s later; a timeout then
    raises CommandTimeout. The exit status is returned as is (a signal: 128 + its number);
    ``capture`` collects stdout and stderr, else they are ours.
    """
    import threading

    exe, plain, safe = _prepare(argv, "running", desc)
    pipe = subprocess.PIPE if capture else None
    main = threading.current_thread() is threading.main_thread()
    with forwarded_signals(active=main) as attach:
        try:
            proc = subprocess.Popen(
                [exe, *plain[1:]], stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe,
                env=dict(env) if env is not None else None, pass_fds=tuple(pass_fds),
                process_group=0 if main else None)
        except OSError as exc:
            raise CommandFailed(desc, safe, 127, str(exc)) from exc
        attach(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # its text holds the unredacted argv: not chained
            _stop(proc, group=main)
            raise CommandTimeout(desc, safe, float(timeout or 0)) from None
        except BaseException:
            _stop(proc, group=main)
            raise
    rc = proc.returncode
    return Completed(safe, 128 - rc if rc < 0 else rc,
                     out.decode(errors="replace") if out is not None else "",
                     err.decode(errors="replace") if err is not None else "")


def _stop(proc: subprocess.Popen[bytes], *, group: bool) -> None:
    """SIGTERM ``proc``, then SIGKILL it (its group, if it leads one) 10 s later; reap it and
    close its pipes."""
    try:
        proc.terminate()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        if group:
            _kill_group(proc)
            return
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
