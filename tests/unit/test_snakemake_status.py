"""Exit markers + one squeue per round -> success, failure (with Slurm's reason) or still active;
a fake clock stands in for time."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_exec.slurm.parse import JobInfo
from hpc_exec.snakemake.status import Outcome, Tracker, Verdict, read_markers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracker(clock: Clock) -> Tracker:
    calls = []

    def min_job_age() -> float:
        calls.append(1)
        assert len(calls) == 1, "MinJobAge is read once"
        return 300.0

    t = Tracker(min_job_age=min_job_age, marker_grace=5.0, clock=clock)
    t.submitted("1")
    return t


def test_markers_decide_first(tracker: Tracker) -> None:
    running = JobInfo("1", "RUNNING")
    assert tracker.decide("1", {"1": 0}, running) == Verdict(Outcome.SUCCESS)
    assert tracker.decide("1", {"1": 3}, None) == Verdict(Outcome.FAILURE,
                                                          "exited with status 3")
    assert tracker.decide("1", {"1": None}, None).message == "left an unreadable exit marker"


@pytest.mark.parametrize(("info", "message"), [
    (JobInfo("1", "TIMEOUT", "TimeLimit"),
     "reached its time limit (Slurm state TIMEOUT, reason TimeLimit)"),
    (JobInfo("1", "CANCELLED"), "was cancelled (Slurm state CANCELLED)"),
    (JobInfo("1", "NODE_FAIL", "NodeDown"), "ended with Slurm state NODE_FAIL, reason NodeDown"),
    (JobInfo("1", "OUT_OF_MEMORY"), "ended with Slurm state OUT_OF_MEMORY"),
])
def test_slurm_ends_without_marker_fail_at_once(tracker: Tracker, info: JobInfo,
                                                message: str) -> None:
    assert tracker.decide("1", {}, info) == Verdict(Outcome.FAILURE, message)


def test_pending_and_running_stay_active(tracker: Tracker) -> None:
    for state in ("PENDING", "RUNNING", "COMPLETING", "SOMETHING_NEW"):
        assert tracker.decide("1", {}, JobInfo("1", state)).outcome is Outcome.ACTIVE


def test_ended_without_marker_waits_for_the_filesystem(tracker: Tracker, clock: Clock) -> None:
    done = JobInfo("1", "COMPLETED")
    assert tracker.decide("1", {}, done).outcome is Outcome.ACTIVE
    clock.now += 4
    assert tracker.decide("1", {}, done).outcome is Outcome.ACTIVE
    assert tracker.decide("1", {"1": 0}, done).outcome is Outcome.SUCCESS  # it arrived
    clock.now += 2
    assert tracker.decide("1", {}, done) == Verdict(Outcome.SUCCESS)  # Slurm's word, at last
    tracker.submitted("2")
    failed = JobInfo("2", "FAILED", "NonZeroExitCode")
    assert tracker.decide("2", {}, failed).outcome is Outcome.ACTIVE
    clock.now += 6
    assert tracker.decide("2", {}, failed) == Verdict(
        Outcome.FAILURE,
        "ended with Slurm state FAILED, reason NonZeroExitCode and wrote no exit marker")


def test_missing_everywhere_longer_than_min_job_age_is_an_error(tracker: Tracker,
                                                                clock: Clock) -> None:
    assert tracker.decide("1", {}, JobInfo("1", "RUNNING")).outcome is Outcome.ACTIVE
    clock.now += 299
    assert tracker.decide("1", {}, None).outcome is Outcome.ACTIVE
    clock.now += 2  # 301 s since squeue last listed it
    verdict = tracker.decide("1", {}, None)
    assert verdict == Verdict(Outcome.FAILURE,
                              "is lost: neither squeue nor scontrol listed it for more than "
                              "MinJobAge (300 s), and it wrote no exit marker")


def test_rounds_without_an_answer_do_not_count(tracker: Tracker, clock: Clock) -> None:
    # a controller restart: the job keeps running, and is not declared lost meanwhile
    tracker.submitted("2")
    for _ in range(20):
        clock.now += 30
        assert tracker.decide("2", {}, None, queried=False).outcome is Outcome.ACTIVE
    clock.now += 30  # answered again: 30 s since it was last seen in an answered round
    assert tracker.decide("2", {}, None).outcome is Outcome.ACTIVE
    clock.now += 271
    assert "is lost" in tracker.decide("2", {}, None).message


def test_slurm_silent_for_too_long_fails(clock: Clock) -> None:
    tracker = Tracker(min_job_age=lambda: 300.0, marker_grace=5.0, clock=clock,
                      unreachable_limit=600.0)
    tracker.submitted("3")
    clock.now += 599
    assert tracker.decide("3", {}, None, queried=False).outcome is Outcome.ACTIVE
    clock.now += 2
    assert tracker.decide("3", {}, None, queried=False).message == \
        "is unknown: neither squeue nor scontrol answered for 601 s"


def test_slurm_reason_beats_the_marker(tracker: Tracker, clock: Clock) -> None:
    timeout = JobInfo("4", "TIMEOUT", "TimeLimit")
    assert tracker.decide("4", {"4": 143}, timeout).message == \
        "reached its time limit (Slurm state TIMEOUT, reason TimeLimit); the job script left " \
        "status 143"
    # Slurm still finishing the job: wait a little for its final state
    running = JobInfo("5", "COMPLETING")
    assert tracker.decide("5", {"5": 137}, running).outcome is Outcome.ACTIVE
    oom = JobInfo("5", "OUT_OF_MEMORY", "OutOfMemory")
    assert "OUT_OF_MEMORY" in tracker.decide("5", {"5": 137}, oom).message
    assert tracker.decide("6", {"6": 2}, running).outcome is Outcome.ACTIVE
    clock.now += 4
    assert tracker.decide("6", {"6": 2}, running).message == "exited with status 2"
    assert tracker.decide("7", {"7": 3}, None).message == "exited with status 3"


def test_read_markers(tmp_path: Path) -> None:
    assert read_markers(tmp_path / "absent") == {}
    (tmp_path / "11.exit").write_text("0\n")
    (tmp_path / "12.exit").write_text("137\n")
    (tmp_path / "13.exit").write_text("garbage")
    (tmp_path / ".14.exit.tmp").write_text("0\n")  # being written
    (tmp_path / "other").write_text("1")
    assert read_markers(tmp_path) == {"11": 0, "12": 137, "13": None}
