"""The Slurm driver's pure parsers, on output captured from the testbed's Slurm 22.05.8.

The jobs: 22 ran ``echo ok``; 23 exited 3; 24 slept past ``-t 1``; 25 was scancelled while
running; 26 was held with ``--begin=now+3600`` and then scancelled; 27 asked for more memory
than any node has (sbatch failed, yet slurmctld kept a FAILED record).
"""

from __future__ import annotations

import pytest

from hpc_exec.slurm.parse import (
    STATES,
    JobInfo,
    SlurmOutputError,
    Status,
    parse_duration,
    parse_sbatch,
    parse_scontrol_config,
    parse_scontrol_jobs,
    parse_squeue,
    status_of,
)

# squeue --noheader --name cap-1796035698 --states=all --format='%i|%T|%r'
SQUEUE = """\
25|CANCELLED|None
26|CANCELLED|BeginTime
22|COMPLETED|None
23|FAILED|NonZeroExitCode
27|FAILED|BadConstraints
24|TIMEOUT|TimeLimit
"""

# the same jobs while 24 ran and 26 waited
SQUEUE_EARLIER = """\
25|CANCELLED|None
22|COMPLETED|None
23|FAILED|NonZeroExitCode
27|FAILED|BadConstraints
26|PENDING|BeginTime
24|RUNNING|None
"""

# scontrol show job -o (jobs 22-25 of the same run, lines verbatim)
SCONTROL = """\
JobId=22 JobName=cap-1796035698 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901738 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-30T10:48:18 EligibleTime=2026-11-30T10:48:18 AccrueTime=2026-11-30T10:48:18 StartTime=2026-11-30T10:48:19 EndTime=2026-11-30T10:48:19 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T10:48:19 Scheduler=Main Partition=debug AllocNode:Sid=localhost:12713 ReqNodeList=(null) ExcNodeList=(null) NodeList=node3 BatchHost=node3 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/var/tmp/smkcap StdErr=/var/tmp/smkcap/22.out StdIn=/dev/null StdOut=/var/tmp/smkcap/22.out Power= 
JobId=23 JobName=cap-1796035698 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901737 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-30T10:48:18 EligibleTime=2026-11-30T10:48:18 AccrueTime=2026-11-30T10:48:18 StartTime=2026-11-30T10:48:19 EndTime=2026-11-30T10:48:19 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T10:48:19 Scheduler=Main Partition=debug AllocNode:Sid=localhost:12713 ReqNodeList=(null) ExcNodeList=(null) NodeList=node3 BatchHost=node3 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/var/tmp/smkcap StdErr=/var/tmp/smkcap/23.out StdIn=/dev/null StdOut=/var/tmp/smkcap/23.out Power= 
JobId=24 JobName=cap-1796035698 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901736 Nice=0 Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=143:0 RunTime=00:01:09 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-30T10:48:18 EligibleTime=2026-11-30T10:48:18 AccrueTime=2026-11-30T10:48:18 StartTime=2026-11-30T10:48:19 EndTime=2026-11-30T10:49:28 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T10:48:19 Scheduler=Main Partition=debug AllocNode:Sid=localhost:12713 ReqNodeList=(null) ExcNodeList=(null) NodeList=node3 BatchHost=node3 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/var/tmp/smkcap StdErr=/var/tmp/smkcap/24.out StdIn=/dev/null StdOut=/var/tmp/smkcap/24.out Power= 
JobId=25 JobName=cap-1796035698 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901735 Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:07 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-30T10:48:18 EligibleTime=2026-11-30T10:48:18 AccrueTime=2026-11-30T10:48:18 StartTime=2026-11-30T10:48:19 EndTime=2026-11-30T10:48:26 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T10:48:19 Scheduler=Main Partition=debug AllocNode:Sid=localhost:12713 ReqNodeList=(null) ExcNodeList=(null) NodeList=node3 BatchHost=node3 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/var/tmp/smkcap StdErr=/var/tmp/smkcap/25.out StdIn=/dev/null StdOut=/var/tmp/smkcap/25.out Power= 
"""

# scontrol show config (an excerpt: first lines, the keys we read, the trailer)
CONFIG = """\
Configuration data as of 2026-11-30T10:48:30
AccountingStorageBackupHost = (null)
AccountingStorageType   = accounting_storage/none
ClusterName             = hpcexec
KillWait                = 5 sec
MinJobAge               = 300 sec
SLURM_VERSION           = 22.05.8
SuspendRate             = 60 nodes/min
TaskPlugin              = task/none
X11Parameters           = (null)

Slurmctld(primary) at vm is UP
"""


def test_squeue_states_and_reasons() -> None:
    jobs = parse_squeue(SQUEUE)
    assert jobs["24"] == JobInfo("24", "TIMEOUT", "TimeLimit")
    assert jobs["22"] == JobInfo("22", "COMPLETED", "")
    assert {k: v.status for k, v in jobs.items()} == {
        "22": Status.COMPLETED, "23": Status.FAILED, "24": Status.TIMEOUT,
        "25": Status.CANCELLED, "26": Status.CANCELLED, "27": Status.FAILED}
    earlier = parse_squeue(SQUEUE_EARLIER)
    assert earlier["26"].status is Status.PENDING and earlier["26"].reason == "BeginTime"
    assert earlier["24"].status is Status.RUNNING


def test_squeue_empty_and_multi_cluster_headers() -> None:
    assert parse_squeue("") == {}
    assert parse_squeue("CLUSTER: a\n7|RUNNING|None\nCLUSTER: b\n") == {
        "7": JobInfo("7", "RUNNING", "")}


@pytest.mark.parametrize("line", ["garbage", "7|", "|RUNNING|None"])
def test_squeue_garbage_names_the_line(line: str) -> None:
    with pytest.raises(SlurmOutputError, match="unexpected squeue line"):
        parse_squeue(line)


def test_scontrol_jobs_with_exit_codes() -> None:
    jobs = parse_scontrol_jobs(SCONTROL)
    assert jobs["23"] == JobInfo("23", "FAILED", "NonZeroExitCode", "3:0")
    assert jobs["24"] == JobInfo("24", "TIMEOUT", "TimeLimit", "143:0")
    assert jobs["25"].status is Status.CANCELLED and jobs["25"].exit_code == "0:15"
    assert set(parse_scontrol_jobs(SCONTROL, name="cap-1796035698")) == {"22", "23", "24", "25"}
    assert parse_scontrol_jobs(SCONTROL, name="another-run") == {}


def test_scontrol_no_jobs_and_garbage() -> None:
    assert parse_scontrol_jobs("No jobs in the system\n") == {}
    with pytest.raises(SlurmOutputError, match="scontrol show job"):
        parse_scontrol_jobs("JobName=x Reason=None\n")


def test_sbatch_parsable() -> None:
    assert parse_sbatch("22\n") == ("22", None)
    assert parse_sbatch("22;hpcexec\n") == ("22", "hpcexec")
    with pytest.raises(SlurmOutputError, match="'Submitted batch job 22'"):
        parse_sbatch("Submitted batch job 22\n")
    with pytest.raises(SlurmOutputError, match="no job id"):
        parse_sbatch("")


def test_config_and_min_job_age() -> None:
    config = parse_scontrol_config(CONFIG)
    assert config["MinJobAge"] == "300 sec"
    assert config["AccountingStorageType"] == "accounting_storage/none"
    assert config["X11Parameters"] == "(null)"
    assert "Slurmctld(primary)" not in config
    assert parse_duration(config["MinJobAge"]) == 300
    assert parse_duration("5 min") == 300 and parse_duration("42") == 42
    with pytest.raises(SlurmOutputError, match="'INFINITE'"):
        parse_duration("INFINITE")


def test_state_table() -> None:
    assert STATES["TIMEOUT"] is Status.TIMEOUT  # its own terminal state
    assert status_of("CANCELLED by 0") is Status.CANCELLED
    assert status_of("COMPLETING") is Status.RUNNING
    assert status_of("SOMETHING_NEW") is Status.UNKNOWN
    assert not Status.UNKNOWN.terminal and not Status.PENDING.terminal
    assert {s for s in Status if s.terminal} == {
        Status.COMPLETED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED}
