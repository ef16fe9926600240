"""Slurm global sync hook: no task's container starts before every task of the step arrived.

Contract (docs/hooks.md; run as a ``createContainer`` or ``createRuntime`` hook; no arguments):

* Applies when the container process env has ``SLURM_JOB_ID``, ``SLURM_STEP_ID``,
  ``SLURM_NTASKS`` and ``SLURM_PROCID``; otherwise, or with one task, exits 0 (DEBUG line).
* Hook env: ``HOOK_BASE_DIR`` (absolute; shared by all nodes of the job), ``PASSWD_FILE`` (names
  the container user), optional ``SYNC_TIMEOUT`` (seconds, default 300) and
  ``SYNC_POLL_INTERVAL`` (seconds, default 0.005).
* Sync dir ``<HOOK_BASE_DIR>/<user>/.oci-hooks/slurm-global-sync/<job>.<step>`` with
  ``arrival/<rank>`` and ``departure/<rank>`` files and one ``verdict`` file.
* Optional container env ``SLURM_LOCALID`` picks the node leaders (below).
* Exit 0 once every rank has arrived; exit 1 with an error naming the missing ranks when they
  have not all arrived within the timeout. All ranks see the same outcome, and no sync dir is
  left behind either way.

Beyond Sarus' hook (every rank lists the arrival dir every 0.1 s, forever):

* The verdict is one file created atomically (``link(2)`` of a complete temp file, which fails if
  the name exists): ``go`` by whichever rank first sees all arrivals, normally the last arriver
  right after its own arrival, or ``abort <ranks>`` by the first rank whose timeout expires.
  Since exactly one of them can exist, no rank is released while another gives up.
* Waiting ranks wake at once on inotify events, which cover the changes made on their own
  node. One rank per node (``SLURM_LOCALID`` 0) and rank 0 also poll the verdict file every
  ``SYNC_POLL_INTERVAL``, so a verdict written on another node of a shared file system is seen
  within that interval; the node's leader then creates a ``.seen.<rank>`` file, whose inotify
  event wakes the other ranks of its node. Those others poll only every 0.1 s as a safety net
  (every poll interval where inotify is unavailable), which keeps 64 waiting ranks from
  costing a core. Only rank 0 lists the arrival dir every poll; the others list it every
  0.25 s in case a file system's directory cache hid an arrival from the last arriver.
* The hook skips interpreter finalisation when run as a program: at a release every rank exits
  at the same moment.
* The rank that gives up leaves a small ``<job>.<step>.failed`` file next to the sync dir, naming
  the missing ranks, so a rank arriving after the others gave up fails at once with the same
  message instead of waiting out its own timeout. Rank 0 of a later step of the job removes it
  once it is older than the timeout plus a margin.
* Rank 0 removes leftovers of crashed steps of the same job first: entries older than the
  timeout plus a margin, which no live barrier can own because each rank removes its own files
  within its timeout. It removes the dir after every rank departed (or the timeout passed).

When started as root for a non-root container user, the hook switches its effective uid/gid to
that user first, so the files belong to the user (and root-squashed shared file systems work).
"""

from __future__ import annotations

import os
import sys
import time

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks._state import (
    Container,
    Deadline,
    HookError,
    Log,
    env_seconds,
    exit_now,
    passwd_entry,
    read_container,
    run_hook,
)

__all__ = ["DEFAULT_POLL_INTERVAL", "DEFAULT_TIMEOUT", "Barrier", "main", "sync_dir"]

HOOK = "slurm-global-sync"
DEFAULT_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 0.005
FALLBACK_LIST_INTERVAL = 0.25  # non-zero ranks re-list the arrival dir this often
FOLLOWER_POLL_INTERVAL = 0.1  # ranks that inotify wakes when their node leader saw the verdict
STALE_MARGIN = 10.0  # seconds beyond the timeout before rank 0 calls an entry a leftover
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_NTASKS", "SLURM_PROCID")

_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100


def sync_dir(base_dir: str, user: str, job: str, step: str) -> str:
    """``<base_dir>/<user>/.oci-hooks/slurm-global-sync/<job>.<step>``."""
    return os.path.join(base_dir, user, ".oci-hooks", "slurm-global-sync", f"{job}.{step}")


class _Waker:
    """Sleeps for a poll interval, or less when inotify reports a change in a watched dir."""

    def __init__(self, dirs: list[str]) -> None:
        self.fd = -1
        try:
            import ctypes
            import select

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            for d in dirs:
                libc.inotify_add_watch(fd, os.fsencode(d), _IN_CREATE | _IN_MOVED_TO)
            self.poller = select.poll()
            self.poller.register(fd, select.POLLIN)
            self.fd = fd
        except (OSError, AttributeError, ImportError):  # no inotify here: plain polling
            self.fd = -1

    def wait(self, seconds: float) -> None:
        if self.fd < 0:
            time.sleep(seconds)
            return
        if self.poller.poll(max(0, int(seconds * 1000 + 0.5))):
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it; what is already gone is fine."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        entries = None
    if entries is None:
        _unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
        else:
            _unlink(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _newest_mtime(path: str) -> float:
    """The newest mtime of ``path`` and everything under it (0 if it vanished)."""
    try:
        newest = os.lstat(path).st_mtime
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0.0
    except NotADirectoryError:
        return newest
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                newest = max(newest, _newest_mtime(entry.path))
            else:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except FileNotFoundError:
            pass
    return newest


class Barrier:
    """One rank's side of the arrival/verdict/departure barrier in ``directory``."""

    def __init__(self, directory: str, rank: int, ntasks: int, *, timeout: float,
                 poll_interval: float, log: Log, label: str = "",
                 node_leader: bool = True) -> None:
        self.directory = directory
        self.rank = rank
        self.ntasks = ntasks
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.node_leader = node_leader or rank == 0
        self.log = log
        self.label = label or os.path.basename(directory)
        self.arrival = os.path.join(directory, "arrival")
        self.departure = os.path.join(directory, "departure")
        self.verdict = os.path.join(directory, "verdict")

    # -- the protocol ------------------------------------------------------------------------

    def run(self) -> None:
        """Arrive, wait for the verdict, depart; HookError when the barrier timed out."""
        deadline = Deadline(self.timeout)
        if self.rank == 0:
            self.clean_leftovers()
        self._check_tombstone()
        self._make_dirs(deadline)
        # Watch before arriving: the last arriver must decide without a slow step in between.
        # Rank 0 does not watch departure/: 63 departures at once would wake it 63 times while
        # the others still need the CPU to be released; it polls for them instead.
        waker = _Waker([self.directory, self.arrival] if self.rank == 0 else [self.directory])
        try:
            self._arrive(deadline)
            # The last arriver is the one whose listing shows everybody: it decides at once.
            if len(self._arrived()) == self.ntasks:
                self._publish("go")
            verdict = self._wait_verdict(deadline, waker)
            if verdict == "go":
                self._touch(os.path.join(self.departure, str(self.rank)))
                self.log.debug(f"rank {self.rank} released at {time.time():.6f}")
                if self.rank == 0:
                    self._wait_departures(Deadline(self.timeout), waker)
                    _remove_tree(self.directory)
                return
        finally:
            waker.close()
        missing = verdict.partition(" ")[2] or "unknown"
        self._write_tombstone(missing)
        self._abandon()
        raise HookError(self._failure(missing))

    def _failure(self, missing: str, late: bool = False) -> str:
        return (f"Slurm global sync of step {self.label} failed on rank {self.rank}: "
                f"{'the barrier had already failed: ' if late else ''}rank(s) "
                f"{missing.replace(',', ', ')} of {self.ntasks} did not arrive within the "
                f"{self.timeout:g} s timeout (SYNC_TIMEOUT); sync dir {self.directory}")

    @property
    def tombstone(self) -> str:
        """``<job>.<step>.failed``: tells ranks arriving after a failure what happened."""
        return self.directory + ".failed"

    def _write_tombstone(self, missing: str) -> None:
        tmp = f"{self.tombstone}.{self.rank}.{os.getpid()}"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(missing + "\n")
            os.replace(tmp, self.tombstone)
        except OSError:  # only a courtesy to late ranks
            _unlink(tmp)

    def _check_tombstone(self) -> None:
        """Fail at once when this step's barrier already failed (within the timeout + margin);
        an older tombstone belongs to an earlier attempt and is removed."""
        try:
            age = time.time() - os.lstat(self.tombstone).st_mtime
            with open(self.tombstone, encoding="ascii") as f:
                missing = f.read().strip()
        except FileNotFoundError:
            return
        if age > self.timeout + STALE_MARGIN:
            _unlink(self.tombstone)
            return
        raise HookError(self._failure(missing or "unknown", late=True))

    def _make_dirs(self, deadline: Deadline) -> None:
        while True:
            try:
                os.makedirs(self.arrival, mode=0o700, exist_ok=True)
                os.makedirs(self.departure, mode=0o700, exist_ok=True)
                return
            except FileNotFoundError as exc:  # a failed barrier's last rank is removing the dir
                if deadline.expired():
                    raise HookError(f"cannot create {self.directory}: it keeps vanishing") from exc
                time.sleep(self.poll_interval)
            except OSError as exc:
                raise HookError(f"cannot create the sync dir {self.directory}: "
                                f"{exc.strerror}") from exc

    def _arrive(self, deadline: Deadline) -> None:
        mine = os.path.join(self.arrival, str(self.rank))
        while True:
            try:
                now = time.time()  # read before the file exists: arrival is no earlier than this
                self._touch(mine)
                self.log.debug(f"rank {self.rank} arrived at {now:.6f}")
                return
            except FileNotFoundError:
                self._make_dirs(deadline)
            except OSError as exc:
                raise HookError(f"cannot create the sync file {mine}: {exc.strerror}") from exc

    def _wait_verdict(self, deadline: Deadline, waker: _Waker) -> str:
        # Inotify sees only this node's changes. One leader per node (and rank 0) polls fast
        # and, once it has read the verdict, creates a file in the dir, which wakes the other
        # ranks of its node at once; they themselves poll slowly, as a safety net.
        poll = self.poll_interval
        if waker.fd >= 0 and not self.node_leader:
            poll = max(poll, FOLLOWER_POLL_INTERVAL)
        next_listing = 0.0 if self.rank == 0 else time.monotonic() + FALLBACK_LIST_INTERVAL
        while True:
            verdict = self._read_verdict()
            if verdict is not None:
                if self.node_leader and self.rank != 0:
                    self._touch_quietly(os.path.join(self.directory, f".seen.{self.rank}"))
                return verdict
            now = time.monotonic()
            if now >= next_listing:
                if len(self._arrived()) == self.ntasks:
                    self._publish("go")
                    continue
                next_listing = now if self.rank == 0 else now + FALLBACK_LIST_INTERVAL
            if deadline.expired():
                missing = sorted(set(range(self.ntasks)) - self._arrived())
                self._publish(f"abort {','.join(map(str, missing))}" if missing else "go")
                continue
            waker.wait(min(poll, deadline.remaining()))

    def _wait_departures(self, deadline: Deadline, waker: _Waker) -> None:
        while True:
            departed = self._ranks_in(self.departure)
            if len(departed) == self.ntasks:
                return
            if deadline.expired():
                missing = sorted(set(range(self.ntasks)) - departed)
                self.log.warning(
                    f"rank(s) {', '.join(map(str, missing))} did not depart within "
                    f"{self.timeout:g} s; removing {self.directory} anyway")
                return
            waker.wait(min(self.poll_interval, deadline.remaining()))

    def _abandon(self) -> None:
        """After an abort: remove our arrival; the last rank out removes the whole dir."""
        _unlink(os.path.join(self.arrival, str(self.rank)))
        try:
            if os.listdir(self.arrival):
                return
        except FileNotFoundError:
            pass
        try:
            for entry in os.scandir(self.directory):  # the verdict and .seen.* relay files
                if not entry.is_dir(follow_symlinks=False):
                    _unlink(entry.path)
        except FileNotFoundError:
            pass
        for path in (self.arrival, self.departure, self.directory):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:  # not empty: a late rank arrived meanwhile and will clean up
                return

    # -- leftovers ---------------------------------------------------------------------------

    def clean_leftovers(self) -> None:
        """Remove what crashed steps of this job left (rank 0, before arriving)."""
        parent = os.path.dirname(self.directory)
        job = os.path.basename(self.directory).partition(".")[0]
        cutoff = time.time() - self.timeout - STALE_MARGIN
        try:
            siblings = [e.path for e in os.scandir(parent) if e.name.startswith(f"{job}.")]
        except FileNotFoundError:
            return
        for path in siblings:
            if path == self.directory:
                self._clean_own_leftovers(cutoff)
            elif _newest_mtime(path) < cutoff:
                self.log.info(f"removing the leftover sync dir {path} of a crashed step")
                _remove_tree(path)

    def _clean_own_leftovers(self, cutoff: float) -> None:
        if _newest_mtime(self.directory) < cutoff:
            self.log.info(f"removing the leftover sync dir {self.directory} of a crashed step")
            _remove_tree(self.directory)
            return
        for sub in (self.arrival, self.departure):
            try:
                entries = list(os.scandir(sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    _unlink(entry.path)
        try:
            if os.lstat(self.verdict).st_mtime < cutoff:
                _unlink(self.verdict)
        except FileNotFoundError:
            pass

    # -- files -------------------------------------------------------------------------------

    @staticmethod
    def _touch(path: str) -> None:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))

    @staticmethod
    def _touch_quietly(path: str) -> None:
        try:
            Barrier._touch(path)
        except OSError:  # only a wake-up call for this node's other ranks
            pass

    def _ranks_in(self, directory: str) -> set[int]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return set()
        return {int(n) for n in names if n.isdigit() and int(n) < self.ntasks}

    def _arrived(self) -> set[int]:
        return self._ranks_in(self.arrival)

    def _read_verdict(self) -> str | None:
        try:
            fd = os.open(self.verdict, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:  # never empty: the file is linked into place complete
            return os.read(fd, 65536).decode("ascii", "replace").strip() or None
        finally:
            os.close(fd)

    def _publish(self, verdict: str) -> None:
        """Create the verdict file unless another rank already did (first writer wins)."""
        # The temp file goes where waiting ranks do not watch: one wake-up each, for the link.
        tmp = os.path.join(self.departure, f".verdict.{self.rank}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, verdict.encode() + b"\n")
            finally:
                os.close(fd)
            os.link(tmp, self.verdict)
            self.log.debug(f"rank {self.rank} published '{verdict}'")
        except FileExistsError:
            pass
        except FileNotFoundError as exc:
            raise HookError(f"the sync dir {self.directory} vanished while waiting") from exc
        finally:
            _unlink(tmp)


def _slurm_numbers(env: dict[str, str]) -> tuple[str, str, int, int]:
    job, step = env["SLURM_JOB_ID"].strip(), env["SLURM_STEP_ID"].strip()
    for name, value in (("SLURM_JOB_ID", job), ("SLURM_STEP_ID", step)):
        if not value or not value.replace("_", "").isalnum() or not value.isascii():
            raise HookError(f"{name}={value!r} in the container env is not a Slurm id")
    try:
        ntasks, rank = int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    except ValueError as exc:
        raise HookError("SLURM_NTASKS and SLURM_PROCID in the container env must be integers "
                        f"(got {env['SLURM_NTASKS']!r}, {env['SLURM_PROCID']!r})") from exc
    if ntasks < 1 or not 0 <= rank < ntasks:
        raise HookError(f"SLURM_PROCID={rank} is not a rank of SLURM_NTASKS={ntasks}")
    return job, step, ntasks, rank


def _become(container: Container) -> None:
    """As root, act as the container user so the sync files are theirs."""
    if os.geteuid() != 0 or container.uid == 0 or container.rootless:
        return
    try:
        os.setgroups([container.gid])
        os.setegid(container.gid)
        os.seteuid(container.uid)
    except OSError as exc:
        raise HookError(f"cannot switch to uid {container.uid}: {exc.strerror}") from exc


def _run(log: Log) -> int:
    container = read_container()
    missing = [v for v in SLURM_VARS if v not in container.env]
    if missing:
        log.debug(f"not a Slurm task ({', '.join(missing)} unset in the container env): "
                  "nothing to synchronise")
        return 0
    job, step, ntasks, rank = _slurm_numbers(container.env)
    if ntasks == 1:
        log.debug("a one-task step: nothing to synchronise")
        return 0
    base = os.environ.get("HOOK_BASE_DIR", "")
    if not os.path.isabs(base):
        raise HookError(f"HOOK_BASE_DIR must be an absolute path in the hook env (got {base!r})")
    passwd = os.environ.get("PASSWD_FILE", "")
    if not passwd:
        raise HookError("PASSWD_FILE is not set in the hook env")
    user = passwd_entry(passwd, container.uid).name
    timeout = env_seconds(os.environ, "SYNC_TIMEOUT", DEFAULT_TIMEOUT)
    poll = env_seconds(os.environ, "SYNC_POLL_INTERVAL", DEFAULT_POLL_INTERVAL)
    _become(container)
    directory = sync_dir(base, user, job, step)
    log.debug(f"rank {rank} of {ntasks} syncing in {directory}")
    Barrier(directory, rank, ntasks, timeout=timeout, poll_interval=poll, log=log,
            label=f"{job}.{step}",
            node_leader=container.env.get("SLURM_LOCALID", "0").strip() in ("0", "")).run()
    return 0


def main() -> int:
    """Console script ``hpc-hook-slurm-global-sync``: exit status 0 released, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    # Skipping finalisation matters most here: at a 64-rank release every rank exits at once.
    exit_now(main())
