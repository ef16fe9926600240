"""The executor's status rounds, arguments and cancel, on an Executor assembled by hand around a
fake Slurm client, a fake scheduler and stand-in jobs (no Snakemake run, no programs)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from hpc_exec.errors import CommandFailed
from hpc_exec.slurm.parse import JobInfo
from hpc_exec.snakemake.executor import Executor
from hpc_exec.snakemake.jobs import RunLayout
from hpc_exec.snakemake.settings import ExecutorSettings
from hpc_exec.snakemake.status import Tracker


class FakeClient:
    def __init__(self, squeue: dict[str, JobInfo] | Exception,
                 scontrol: dict[str, JobInfo] | None = None) -> None:
        self.squeue, self.scontrol = squeue, scontrol or {}
        self.calls: list[tuple[str, Any]] = []

    def queue(self, name: str) -> dict[str, JobInfo]:
        self.calls.append(("squeue", name))
        if isinstance(self.squeue, Exception):
            raise self.squeue
        return self.squeue

    def show_jobs(self, name: str) -> dict[str, JobInfo]:
        self.calls.append(("scontrol", name))
        return self.scontrol

    def cancel(self, ids: list[str]) -> None:
        self.calls.append(("scancel", list(ids)))

    def submit(self, script: str, options: list[str]) -> str:
        self.calls.append(("sbatch", options))
        return "99"

    def accounting_detail(self, job_id: str) -> str | None:
        return None  # a cluster without accounting


class FakeJob:
    def __init__(self, name: str) -> None:
        self.name, self.jobid = name, 1
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def is_group(self) -> bool:
        return False

    def log_error(self, msg: str | None = None, **kwargs: Any) -> None:
        self.errors.append((msg or "", kwargs))


class Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    warning = error = debug = info


def make_executor(tmp_path: Path, client: FakeClient, **settings: Any) -> Executor:
    ex = Executor.__new__(Executor)
    ex.settings = ExecutorSettings(**settings)
    ex.layout = RunLayout(tmp_path / ".snakemake" / "hpc-container", "run-1")
    ex.layout.create()
    ex.client = client  # type: ignore[assignment]
    ex.tracker = Tracker(min_job_age=lambda: 300.0, marker_grace=5.0, clock=lambda: 0.0)
    ex.lock = threading.Lock()
    ex._live, ex._closing, ex._activity = {}, False, False
    ex.logger = Logger()  # type: ignore[assignment]
    ex.status_rate_limiter = contextlib.AsyncExitStack()  # any async context manager
    ex.run_id = "run-1"
    ex.workdir = tmp_path
    ex.finished, ex.failed = [], []
    ex.workflow = SimpleNamespace(scheduler=SimpleNamespace(
        finish_callback=ex.finished.append, error_callback=ex.failed.append),
        deployment_settings=SimpleNamespace(deployment_method={DeploymentMethod.CONDA}))
    ex._next_seconds_between_status_checks = 1.0
    ex._pool = SimpleNamespace(shutdown=lambda **kw: None)
    ex._ready = True
    return ex


def submitted(ex: Executor, job_id: str, name: str) -> SubmittedJobInfo:
    log = ex.layout.logs_dir / name / f"{job_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("output\n")
    info = SubmittedJobInfo(FakeJob(name), external_jobid=job_id, aux={"log": log})
    ex._live[job_id] = info
    ex.tracker.submitted(job_id)
    return info


def round_(ex: Executor, jobs: list[SubmittedJobInfo]) -> list[SubmittedJobInfo]:
    async def collect() -> list[SubmittedJobInfo]:
        return [j async for j in ex.check_active_jobs(jobs)]
    return asyncio.run(collect())


def test_success_markers_alone_need_no_squeue(tmp_path: Path) -> None:
    client = FakeClient({})
    ex = make_executor(tmp_path, client)
    ok = submitted(ex, "4", "good")
    ex.layout.marker("4").write_text("0\n")
    assert round_(ex, [ok]) == []
    assert client.calls == [] and ex.finished == [ok.job]


def test_a_failure_marker_asks_slurm_why(tmp_path: Path) -> None:
    client = FakeClient({})  # squeue no longer lists the job: the marker's status is all
    ex = make_executor(tmp_path, client)
    ok, bad = submitted(ex, "5", "good"), submitted(ex, "6", "bad")
    ex.layout.marker("5").write_text("0\n")
    ex.layout.marker("6").write_text("2\n")
    assert round_(ex, [ok, bad]) == []
    assert client.calls == [("squeue", "run-1")]
    assert ex.finished == [ok.job] and ex.failed == [bad.job]
    assert not Path(ok.aux["log"]).exists()  # removed: keep_logs is off
    message, kwargs = bad.job.errors[0]
    assert message.startswith(f"Slurm job 6 exited with status 2; log: {bad.aux['log']}")
    assert kwargs["aux_logs"] == [str(bad.aux["log"])] and Path(bad.aux["log"]).exists()
    assert ex._live == {} and not ex.layout.marker("5").exists()


def test_one_squeue_per_round_and_slurm_reasons(tmp_path: Path) -> None:
    client = FakeClient({"7": JobInfo("7", "RUNNING"), "8": JobInfo("8", "TIMEOUT", "TimeLimit")})
    ex = make_executor(tmp_path, client, keep_logs=True)
    running, late = submitted(ex, "7", "r"), submitted(ex, "8", "slow")
    assert round_(ex, [running, late]) == [running]
    assert client.calls == [("squeue", "run-1")]
    message = late.job.errors[0][0]
    assert message.startswith("Slurm job 8 reached its time limit (Slurm state TIMEOUT, "
                              f"reason TimeLimit); log: {late.aux['log']}")
    assert ex.next_seconds_between_status_checks == ex.settings.poll_interval  # a job ended
    assert round_(ex, [running]) == [running]
    assert ex.next_seconds_between_status_checks == 1.5  # idle round: grows by half
    for _ in range(10):
        round_(ex, [running])
    assert ex.next_seconds_between_status_checks == ex.settings.max_poll_interval


def test_scontrol_is_the_fallback(tmp_path: Path) -> None:
    client = FakeClient(CommandFailed("querying jobs with squeue", ["squeue"], 1, "down"),
                        {"7": JobInfo("7", "CANCELLED")})
    ex = make_executor(tmp_path, client)
    job = submitted(ex, "7", "r")
    assert round_(ex, [job]) == []
    assert [c[0] for c in client.calls] == ["squeue", "scontrol"]
    assert "was cancelled (Slurm state CANCELLED)" in job.job.errors[0][0]


def test_additional_args_merge_the_deployment_methods(tmp_path: Path) -> None:
    ex = make_executor(tmp_path, FakeClient({}))
    assert ex.additional_general_args() == (
        f"--software-deployment-method apptainer conda --apptainer-prefix "
        f"{ex.layout.images_dir}")


def test_cancel_scancels_exactly_the_runs_jobs(tmp_path: Path) -> None:
    client = FakeClient({})
    ex = make_executor(tmp_path, client)
    live = [submitted(ex, i, "r") for i in ("10", "9", "11")]
    ex.cancel_jobs(live[:1])
    assert client.calls == [("scancel", ["9", "10", "11"])]
    assert ex._closing and ex._live == {}


def test_a_submission_racing_ctrl_c_is_cancelled(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient({})
    ex = make_executor(tmp_path, client)
    job = SimpleNamespace(jobid=3, resources={})
    sub = SimpleNamespace(script="#!/bin/sh\n", options=["--x"],
                          log_pattern=ex.layout.logs_dir / "r" / "%j.log",
                          log=lambda i: ex.layout.logs_dir / "r" / f"{i}.log")
    monkeypatch.setattr("hpc_exec.snakemake.jobs.submission", lambda *a, **k: sub)
    ex.format_job_exec = lambda j: "python -m snakemake"  # type: ignore[method-assign]

    def submit(script: str, options: list[str]) -> str:
        ex._closing = True  # Ctrl-C arrives while sbatch runs
        return "99"

    client.submit = submit  # type: ignore[method-assign]
    ex._submit(job)
    assert client.calls == [("scancel", ["99"])] and ex._live == {}


def test_status_round_before_post_init_is_harmless() -> None:
    # RemoteExecutor starts the status thread before __post_init__ has set anything
    ex = Executor.__new__(Executor)
    assert round_(ex, []) == []
    early = SubmittedJobInfo(FakeJob("x"), external_jobid="9")
    assert round_(ex, [early]) == [early]


def test_a_failing_round_keeps_the_jobs_and_the_thread(tmp_path: Path) -> None:
    client = FakeClient({})
    ex = make_executor(tmp_path, client)
    a, b = submitted(ex, "11", "a"), submitted(ex, "12", "b")
    ex.layout.marker("11").write_text("0\n")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unexpected")

    ex.tracker.decide = boom  # type: ignore[method-assign]
    assert round_(ex, [a, b]) == [a, b]  # no exception reaches Snakemake's status thread
    assert any("status round failed (RuntimeError: unexpected)" in m
               for m in ex.logger.lines)


def test_sacct_detail_is_added_where_accounting_works(tmp_path: Path) -> None:
    client = FakeClient({})
    client.accounting_detail = lambda job_id: "state FAILED, exit code 2:0"  # type: ignore
    ex = make_executor(tmp_path, client)
    bad = submitted(ex, "13", "bad")
    ex.layout.marker("13").write_text("2\n")
    assert round_(ex, [bad]) == []
    message, _ = bad.job.errors[0]
    assert message.startswith("Slurm job 13 exited with status 2; sacct: state FAILED, exit "
                              "code 2:0; log: ")
