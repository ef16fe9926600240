"""Pure parsers for what sbatch, squeue and scontrol print, and the job-state table.

Contract:

* No I/O: every function takes the text a command printed and returns values. The tests feed
  them output captured from Slurm 22.05 (tests/unit/test_slurm_parse.py).
* :data:`STATES` maps every Slurm job state name (``squeue %T``, ``scontrol JobState=``) to one
  of the :class:`Status` values the front ends act on. TIMEOUT is its own terminal status, as in
  Parsl, because "the job hit its time limit" is the one failure users most need told apart. A
  state missing from the table is :attr:`Status.UNKNOWN`, which callers treat as still active.
* Output that cannot be understood raises :class:`SlurmOutputError` quoting the offending text,
  never a bare ``ValueError`` or ``IndexError``.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from hpc_exec.errors import SlurmOutputError

__all__ = ["SQUEUE_FORMAT", "STATES", "JobInfo", "SlurmOutputError", "Status", "parse_duration",
           "parse_sacct_detail", "parse_sbatch", "parse_scontrol_config", "parse_scontrol_jobs",
           "parse_squeue", "status_of"]


class Status(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"  # the batch script exited 0
    FAILED = "failed"  # it exited non-zero, or Slurm failed it (node, boot, memory, ...)
    TIMEOUT = "timeout"  # it hit its time limit
    CANCELLED = "cancelled"  # scancel, or the admin
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED)


# Slurm's job states (squeue(1) "JOB STATE CODES", Slurm 22.05) and what they mean to us.
STATES: dict[str, Status] = {
    "PENDING": Status.PENDING,
    "CONFIGURING": Status.PENDING,
    "REQUEUED": Status.PENDING,
    "REQUEUE_FED": Status.PENDING,
    "REQUEUE_HOLD": Status.PENDING,
    "RESV_DEL_HOLD": Status.PENDING,
    "RUNNING": Status.RUNNING,
    "COMPLETING": Status.RUNNING,  # the script ended; the final state follows
    "RESIZING": Status.RUNNING,
    "SIGNALING": Status.RUNNING,
    "STAGE_OUT": Status.RUNNING,
    "STOPPED": Status.RUNNING,
    "SUSPENDED": Status.RUNNING,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "BOOT_FAIL": Status.FAILED,
    "DEADLINE": Status.FAILED,
    "NODE_FAIL": Status.FAILED,
    "OUT_OF_MEMORY": Status.FAILED,
    "PREEMPTED": Status.FAILED,
    "REVOKED": Status.FAILED,
    "SPECIAL_EXIT": Status.FAILED,
    "TIMEOUT": Status.TIMEOUT,
    "CANCELLED": Status.CANCELLED,
}

# What the driver asks squeue for: job id, full state name, reason. '|' never occurs in them.
SQUEUE_FORMAT = "%i|%T|%r"


class JobInfo(NamedTuple):
    job_id: str
    state: str  # Slurm's state name, e.g. "TIMEOUT"
    reason: str = ""  # Slurm's reason, "" for None
    exit_code: str = ""  # "code:signal" when scontrol reported it, else ""

    @property
    def status(self) -> Status:
        return status_of(self.state)


def status_of(state: str) -> Status:
    """The :class:`Status` of a Slurm state name ("CANCELLED by 0" counts as CANCELLED)."""
    word = state.strip().split(" ", 1)[0].upper().rstrip("+")
    return STATES.get(word, Status.UNKNOWN)


def _reason(text: str) -> str:
    text = text.strip()
    return "" if text in ("None", "(null)", "") else text


def parse_sbatch(stdout: str) -> tuple[str, str | None]:
    """(job id, cluster or None) from ``sbatch --parsable`` ("42" or "42;cluster")."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise SlurmOutputError("sbatch --parsable printed no job id")
    job_id, _, cluster = lines[-1].partition(";")
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmOutputError(f"sbatch --parsable printed {lines[-1]!r}, not a job id")
    return job_id, cluster or None


def parse_squeue(stdout: str) -> dict[str, JobInfo]:
    """Jobs from ``squeue --noheader --format=%i|%T|%r`` (multi-cluster headers are skipped)."""
    jobs: dict[str, JobInfo] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("CLUSTER:"):
            continue
        fields = line.split("|", 2)
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise SlurmOutputError(f"unexpected squeue line {line!r} (format {SQUEUE_FORMAT})")
        jobs[fields[0]] = JobInfo(fields[0], fields[1].strip(), _reason(fields[2]))
    return jobs


# A key of 'scontrol show job -o': letters first, then letters, digits, '_', '/', ':' (e.g.
# "AllocNode:Sid", "CPUs/Task", "NtasksPerN:B:S:C"). Values run up to the next " Key=".
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def _pairs(line: str) -> dict[str, str]:
    keys = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        out.setdefault(m.group(1), line[m.end():end].strip())
    return out


def parse_scontrol_jobs(stdout: str, *, name: str | None = None) -> dict[str, JobInfo]:
    """Jobs from ``scontrol show job -o`` (one job per line), only those named ``name`` if set."""
    jobs: dict[str, JobInfo] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if line.startswith("No jobs in the system"):
            continue
        pairs = _pairs(line)
        if "JobId" not in pairs or "JobState" not in pairs:
            raise SlurmOutputError(f"unexpected 'scontrol show job -o' line {line[:120]!r}")
        if name is not None and pairs.get("JobName") != name:
            continue
        job_id = pairs["JobId"]
        if pairs.get("ArrayTaskId") and pairs.get("ArrayJobId"):
            job_id = f"{pairs['ArrayJobId']}_{pairs['ArrayTaskId']}"
        jobs[job_id] = JobInfo(job_id, pairs["JobState"], _reason(pairs.get("Reason", "")),
                               pairs.get("ExitCode", ""))
    return jobs


def parse_scontrol_config(stdout: str) -> dict[str, str]:
    """``Key = Value`` pairs of ``scontrol show config`` (headers and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        m = re.match(r"^([A-Za-z][\w/.:-]*)\s+= ?(.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


_UNITS = {"sec": 1, "secs": 1, "s": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600}


def parse_duration(text: str) -> float:
    """Seconds from a ``scontrol show config`` duration ("300 sec", "5 min", "300")."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", text)
    if not m or m.group(2) not in ("", *_UNITS):
        raise SlurmOutputError(f"cannot read the duration {text!r}")
    return float(int(m.group(1)) * _UNITS.get(m.group(2), 1))


def parse_sacct_detail(text: str) -> str | None:
    """``sacct --noheader --parsable2 --format=State,ExitCode,Reason`` of one job: its first
    line (the job's own, before its steps) as "state STATE, exit code N:S, reason R", or None
    when sacct printed nothing for it."""
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 3:
            raise SlurmOutputError(f"unexpected sacct line {line[:120]!r}")
        state, code, reason = (f.strip() for f in fields[:3])
        parts = [f"state {state}", f"exit code {code}"]
        if reason and reason != "None":
            parts.append(f"reason {reason}")
        return ", ".join(parts)
    return None
