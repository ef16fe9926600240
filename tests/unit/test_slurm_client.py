"""SlurmClient builds the right argv lists and reads their output (a fake runner stands in for
hpc_exec.process.run); the batch-script template quotes everything and writes its marker last."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from hpc_exec.errors import CommandFailed, InvalidInput
from hpc_exec.process import Completed
from hpc_exec.slurm import SlurmClient, Status, render_batch_script
from hpc_exec.slurm.client import CANCEL_BATCH


class FakeRunner:
    def __init__(self, outputs: dict[str, str] | None = None, returncode: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.outputs = outputs or {}
        self.returncode = returncode

    def __call__(self, argv: list[str], **kwargs: Any) -> Completed:
        self.calls.append({"argv": list(argv), **kwargs})
        if kwargs.get("check", True) and self.returncode:
            raise CommandFailed(kwargs["desc"], argv, self.returncode, "boom")
        return Completed(argv, self.returncode, self.outputs.get(argv[0], ""), "err")


def test_submit_passes_the_script_on_stdin() -> None:
    fake = FakeRunner({"sbatch": "42\n"})
    client = SlurmClient(runner=fake, env={"SLURM_CONF": "/x"}, timeout=7)
    assert client.submit("#!/bin/sh\ntrue\n", ["--job-name=run1", "-t", "5"]) == "42"
    call = fake.calls[0]
    assert call["argv"] == ["sbatch", "--parsable", "--job-name=run1", "-t", "5"]
    assert call["input"] == "#!/bin/sh\ntrue\n"
    assert call["env"] == {"SLURM_CONF": "/x"} and call["timeout"] == 7


def test_queue_is_one_squeue_by_name() -> None:
    fake = FakeRunner({"squeue": "5|RUNNING|None\n6|TIMEOUT|TimeLimit\n"})
    jobs = SlurmClient(runner=fake).queue("run-uuid")
    assert fake.calls[0]["argv"] == ["squeue", "--noheader", "--name=run-uuid", "--states=all",
                                     "--format=%i|%T|%r"]
    assert jobs["6"].status is Status.TIMEOUT and jobs["6"].reason == "TimeLimit"


def test_show_jobs_filters_by_name_and_clusters_are_passed() -> None:
    fake = FakeRunner({"scontrol": "JobId=5 JobName=a JobState=RUNNING Reason=None\n"
                                   "JobId=6 JobName=b JobState=PENDING Reason=Priority\n"})
    jobs = SlurmClient(runner=fake, clusters="c1").show_jobs("b")
    assert fake.calls[0]["argv"] == ["scontrol", "show", "job", "-o", "--clusters=c1"]
    assert list(jobs) == ["6"] and jobs["6"].reason == "Priority"


def test_cancel_batches_ids_and_tolerates_failure() -> None:
    fake = FakeRunner(returncode=1)
    ids = [str(i) for i in range(CANCEL_BATCH + 3)]
    SlurmClient(runner=fake).cancel(ids)
    assert [c["argv"][1:] for c in fake.calls] == [ids[:CANCEL_BATCH], ids[CANCEL_BATCH:]]
    assert all(c["check"] is False for c in fake.calls)


def test_failures_propagate_and_min_job_age_is_read() -> None:
    with pytest.raises(CommandFailed, match="querying jobs with squeue failed"):
        SlurmClient(runner=FakeRunner(returncode=1)).queue("x")
    fake = FakeRunner({"scontrol": "MinJobAge               = 30 sec\n"})
    assert SlurmClient(runner=fake).min_job_age() == 30
    assert SlurmClient(runner=FakeRunner({"scontrol": ""})).min_job_age() == 300


def test_batch_script_quotes_and_marks() -> None:
    script = render_batch_script(
        ["srun", "-n1", "/bin/sh", "-c", "echo \"$HOME\" 'x' && exit 3"],
        description="job 1\nof run $x", env={"A_B": "va'l $y"}, path_prepend=["/p q/bin"],
        marker_dir="/shared dir/status")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == "# job 1 of run $x"
    assert "export PATH='/p q/bin':\"$PATH\"" in lines
    assert "export A_B=" + shlex.quote("va'l $y") in lines
    command = next(line for line in lines if line.startswith("srun "))
    assert shlex.split(command)[-1] == "echo \"$HOME\" 'x' && exit 3"
    # the marker is written after the command, via a temp file, then the status is returned
    marker = lines[lines.index(command) + 2]
    assert marker.index("> '/shared dir/status'/\".$SLURM_JOB_ID.exit.tmp\"") < \
        marker.index("mv -f")
    assert marker.endswith("'/shared dir/status'/\"$SLURM_JOB_ID.exit\"")
    assert lines[-1] == 'exit "$rc"'
    assert "trap 'exit 143' TERM" in lines


def test_batch_script_without_marker_and_bad_input() -> None:
    script = render_batch_script(["true"], description="d")
    assert ".exit" not in script and "\ntrue\nrc=$?\n" in script
    with pytest.raises(InvalidInput, match="'A-B'"):
        render_batch_script(["true"], description="d", env={"A-B": "1"})
    with pytest.raises(InvalidInput, match="needs a command"):
        render_batch_script([], description="d")


def test_sacct_is_asked_only_while_it_works() -> None:
    # a cluster without accounting (this testbed: "accounting storage is disabled")
    fake = FakeRunner(returncode=1)
    client = SlurmClient(runner=fake)
    assert client.accounting_detail("7") is None
    assert client.accounting_detail("8") is None
    assert [c["argv"][0] for c in fake.calls] == ["sacct"]  # asked once, never again
    # a cluster with accounting: the job's own line (before its steps)
    fake = FakeRunner({"sacct": "OUT_OF_MEMORY|0:125|None\nOUT_OF_MEMORY|0:125|\n"})
    client = SlurmClient(runner=fake)
    assert client.accounting_detail("9") == "state OUT_OF_MEMORY, exit code 0:125"
    assert fake.calls[0]["argv"] == ["sacct", "--noheader", "--parsable2", "--jobs", "9",
                                     "--format=State,ExitCode,Reason"]
    fake.outputs["sacct"] = "FAILED|1:0|NonZeroExitCode\n"
    assert client.accounting_detail("10") == \
        "state FAILED, exit code 1:0, reason NonZeroExitCode"
