"""What became of each submitted job: exit markers first, then what Slurm says.

Contract:

* :func:`read_markers` lists ``<dir>/<job id>.exit`` (written by the batch script after the
  step, temp + mv; see hpc_exec/slurm/template.py) with one ``scandir``: no RPC.
* :class:`Tracker` decides, per job and round, from the marker (if any), the job's line in the
  one ``squeue`` of the round (if the query ran and listed it) and a monotonic clock:

  - marker 0 -> success; marker N -> failure "exited with status N", unless Slurm's own
    final state says more (TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL): then that, with
    the status; a job Slurm still lists as running gets ``reason_grace`` seconds to end;
  - Slurm says TIMEOUT, CANCELLED, NODE_FAIL, OUT_OF_MEMORY, ... (no marker: the script was
    killed) -> failure with Slurm's state and reason, at once;
  - Slurm says COMPLETED or FAILED but no marker yet -> wait up to ``marker_grace`` seconds for
    it (shared filesystems lag), then decide from Slurm's state alone;
  - no marker and not listed by any source for longer than Slurm's MinJobAge (since it was last
    listed, or submitted; only rounds in which squeue or scontrol answered count) -> an error
    saying so: never "running forever", never "success";
  - neither squeue nor scontrol answered for ``unreachable_limit`` seconds -> failure; until
    then a controller restart or failover leaves the jobs active;
  - otherwise the job is still active.
* Pure apart from :func:`read_markers`; the clock is passed in, so tests need no sleeping.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hpc_exec.slurm.parse import JobInfo, Status
from hpc_exec.slurm.template import MARKER_SUFFIX

__all__ = ["Outcome", "Tracker", "Verdict", "read_markers"]


def read_markers(directory: Path) -> dict[str, int | None]:
    """Job id -> exit status from the markers in ``directory`` (None: unreadable marker).

    A directory that cannot be read this round (a stale NFS handle, a permission glitch) gives
    no markers: the round then relies on Slurm alone, and the next one tries again."""
    out: dict[str, int | None] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(MARKER_SUFFIX):
            continue
        try:
            text = Path(entry.path).read_text().strip()
        except OSError:  # removed meanwhile, or unreadable this round
            continue
        out[name[:-len(MARKER_SUFFIX)]] = int(text) if text.lstrip("-").isdigit() else None
    return out


class Outcome(enum.Enum):
    ACTIVE = "active"
    SUCCESS = "success"
    FAILURE = "failure"


class Verdict(NamedTuple):
    outcome: Outcome
    message: str = ""  # why it failed, without the log path (the caller adds it)


@dataclass
class _Seen:
    since: float  # submitted, or last listed by Slurm (moved on by unanswered rounds)
    ended: float | None = None  # when the job's script was seen done, Slurm not yet
    checked: float = 0.0  # the last round that decided about it


def _describe(info: JobInfo) -> str:
    reason = f", reason {info.reason}" if info.reason else ""
    if info.status is Status.TIMEOUT:
        return f"reached its time limit (Slurm state TIMEOUT{reason})"
    if info.status is Status.CANCELLED:
        return f"was cancelled (Slurm state {info.state}{reason})"
    return f"ended with Slurm state {info.state}{reason}"


class Tracker:
    def __init__(self, *, min_job_age: Callable[[], float], marker_grace: float,
                 clock: Callable[[], float], reason_grace: float = 3.0,
                 unreachable_limit: float = 3600.0) -> None:
        self._min_job_age = min_job_age  # read lazily: one scontrol, only if ever needed
        self._age: float | None = None
        self.marker_grace = marker_grace
        self.reason_grace = reason_grace
        self.unreachable_limit = unreachable_limit
        self.clock = clock
        self._jobs: dict[str, _Seen] = {}
        self._answered = clock()  # when squeue or scontrol last answered

    def submitted(self, job_id: str) -> None:
        now = self.clock()
        self._jobs[job_id] = _Seen(now, checked=now)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def min_job_age(self) -> float:
        if self._age is None:
            self._age = self._min_job_age()
        return self._age

    def decide(self, job_id: str, markers: Mapping[str, int | None], info: JobInfo | None,
               *, queried: bool = True) -> Verdict:
        """The verdict for one job (module contract); ``queried`` is False when neither squeue
        nor scontrol answered this round."""
        now = self.clock()
        seen = self._jobs.setdefault(job_id, _Seen(now, checked=now))
        if queried:
            self._answered = now
        else:  # a round in which Slurm did not answer does not count toward "lost"
            seen.since += now - seen.checked
        seen.checked = now
        if job_id in markers:
            marker = markers[job_id]
            if marker == 0:
                return Verdict(Outcome.SUCCESS)
            left = "an unreadable exit marker" if marker is None else f"status {marker}"
            if info is not None and info.status.terminal and \
                    info.state not in ("COMPLETED", "FAILED"):
                return Verdict(Outcome.FAILURE, f"{_describe(info)}; the job script left "
                                                f"{left}")
            if info is not None and not info.status.terminal:
                # the script is done, Slurm is finishing the job: its final state may say why
                seen.ended = now if seen.ended is None else seen.ended
                if now - seen.ended < self.reason_grace:
                    return Verdict(Outcome.ACTIVE)
            if marker is None:
                return Verdict(Outcome.FAILURE, "left an unreadable exit marker")
            return Verdict(Outcome.FAILURE, f"exited with status {marker}")
        if not queried:
            silent = now - self._answered
            if silent > self.unreachable_limit:
                return Verdict(Outcome.FAILURE,
                               f"is unknown: neither squeue nor scontrol answered for "
                               f"{silent:.0f} s")
            return Verdict(Outcome.ACTIVE)
        if info is None:
            age = self.min_job_age()
            if now - seen.since > age:
                return Verdict(Outcome.FAILURE,
                               f"is lost: neither squeue nor scontrol listed it for more than "
                               f"MinJobAge ({age:g} s), and it wrote no exit marker")
            return Verdict(Outcome.ACTIVE)
        seen.since = now
        status = info.status
        if status in (Status.COMPLETED, Status.FAILED) and info.state in ("COMPLETED", "FAILED"):
            # the script ended by itself: its marker should be there; filesystems may lag
            if seen.ended is None:
                seen.ended = now
            if now - seen.ended < self.marker_grace:
                return Verdict(Outcome.ACTIVE)
            if status is Status.COMPLETED:
                return Verdict(Outcome.SUCCESS)
            return Verdict(Outcome.FAILURE, f"{_describe(info)} and wrote no exit marker")
        if status.terminal:
            return Verdict(Outcome.FAILURE, _describe(info))
        return Verdict(Outcome.ACTIVE)
