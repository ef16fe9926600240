"""Snakemake resources map to sbatch/srun options exactly as snakemake-executor-plugin-slurm 2.8
maps them (submit_string.get_submit_command, utils.set_gres_string, jobstep get_cpu_setting)."""

from __future__ import annotations

from typing import Any

import pytest

from hpc_exec.errors import InvalidInput
from hpc_exec.snakemake.resources import (
    MANAGED_OPTIONS,
    account_and_partition,
    cpu_option,
    inner_cores,
    is_multi_task,
    sbatch_options,
    srun_options,
    validate_slurm_extra,
)


def opts(threads: int = 1, **resources: Any) -> list[str]:
    return sbatch_options(resources, threads, rule="rule r")


def test_plain_job_gets_one_task_and_its_threads() -> None:
    assert opts(4) == ["--ntasks=1", "--cpus-per-task=4"]


def test_stock_order_and_values() -> None:
    out = opts(2, runtime=30, constraint="haswell", qos="long", mem_mb=2000, nodes=2,
               tasks=3, slurm_extra="--nice=10 --exclusive", slurm_cluster="c2")
    assert out == ["--clusters", "c2", "-t", "30", "-C", "haswell", "--qos=long", "--mem",
                   "2000", "--nodes=2", "--ntasks=3", "--cpus-per-task=2", "--nice=10",
                   "--exclusive"]


def test_memory_per_cpu_wins_over_mem_mb() -> None:
    assert opts(mem_mb=1000, mem_mb_per_cpu=100)[:2] == ["--mem-per-cpu", "100"]


def test_settings_qos_and_reservation() -> None:
    out = sbatch_options({}, 1, rule="rule r", qos="q1", reservation="res")
    assert out == ["--qos=q1", "--reservation=res", "--ntasks=1", "--cpus-per-task=1"]


@pytest.mark.parametrize(("resources", "expected"), [
    ({"cpus_per_task": 8}, "--cpus-per-task=8"),
    ({"cpus_per_task": -1}, None),  # explicitly none (partitions that refuse it)
    ({"gpu": 1, "cpus_per_gpu": 4}, "--cpus-per-gpu=4"),
    ({"cpus_per_gpu": 4}, "--cpus-per-task=3"),  # not a GPU job: threads
])
def test_cpu_setting(resources: dict[str, Any], expected: str | None) -> None:
    assert cpu_option(resources, 3) == expected


def test_inner_cores_follow_the_cpu_request() -> None:
    assert inner_cores({"cpus_per_task": 6}, 2) == 6
    assert inner_cores({}, 2) == 2
    assert inner_cores({"cpus_per_task": -1}, 0) == 1


def test_mpi_task_geometry() -> None:
    assert opts(mpi=True, tasks=4) == ["--ntasks=4", "--cpus-per-task=1"]
    assert opts(mpi=True, tasks_per_node=2, nodes=2) == [
        "--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1"]
    with pytest.raises(InvalidInput, match="needs the resource tasks or tasks_per_node"):
        opts(mpi=True)
    with pytest.raises(InvalidInput, match="not both"):
        opts(mpi=True, tasks=4, tasks_per_node=2)
    with pytest.raises(InvalidInput, match="tasks=1 of an mpi job"):
        opts(mpi=True, tasks=1)
    with pytest.raises(InvalidInput, match="tasks_per_node=1"):
        opts(mpi=True, tasks_per_node=1)


def test_gpu_jobs() -> None:
    assert opts(gpu=2, tasks=2) == ["--ntasks-per-gpu=2", "--cpus-per-task=1", "--gpus=2"]
    assert opts(gpu=1, gpu_model="a100")[-1] == "--gpus=a100:1"
    assert opts(gres="gpu:tesla:2") == ["--cpus-per-task=1", "--gres=gpu:tesla:2"]
    assert opts(gres="scratch:10G") == ["--ntasks=1", "--cpus-per-task=1", "--gres=scratch:10G"]
    with pytest.raises(InvalidInput, match="resource gres='gpu tesla'"):
        opts(gres="gpu tesla")
    with pytest.raises(InvalidInput, match="gpu_model=\"'a100'\""):
        opts(gpu=1, gpu_model="'a100'")


@pytest.mark.parametrize("nodes", [0, -1, True, "2"])
def test_bad_nodes_named(nodes: object) -> None:
    with pytest.raises(InvalidInput, match=f"resource nodes={nodes!r} must be an integer >= 1"):
        opts(nodes=nodes)


@pytest.mark.parametrize(("extra", "flag"), [
    ("--mem=4G", "--mem"), ("--mem 4G", "--mem"), ("-p long", "-p"),
    ("--partition=long", "--partition"), ("-t 10", "-t"), ("--time=10", "--time"),
    ("-A proj", "-A"), ("--job-name=x", "--job-name"), ("--nice=1 --cpus-per-task=4",
                                                        "--cpus-per-task"),
    ("--wrap=ls", "--wrap"), ("--array=1-3", "--array"), ("-c4", "-c4"),
    ("--gpus=1", "--gpus"), ("--output=x.log", "--output"),
    ("--out=x.log", "--out (--output)"), ("--chd=/x", "--chd (--chdir)"),
    ("--job=y", "--job (--job-name)"), ("--wait", "--wait"), ("-W", "-W"),
    ("--test-only", "--test-only"),
])
def test_slurm_extra_may_not_set_managed_flags(extra: str, flag: str) -> None:
    # sbatch takes unambiguous abbreviations of long options, so they are managed too
    with pytest.raises(InvalidInput) as err:
        validate_slurm_extra(extra, "rule r")
    message = str(err.value)
    assert message.startswith(f"slurm_extra of rule r sets {flag}, which the hpc-container "
                              "executor manages (")
    assert "\n" not in message


def test_slurm_extra_allowed_flags_and_quoting() -> None:
    assert validate_slurm_extra("--nice=10 --exclusive -w node1 --comment-not", "rule r") == [
        "--nice=10", "--exclusive", "-w", "node1", "--comment-not"]
    assert validate_slurm_extra("--begin='now + 1 hour'", "rule r") == ["--begin=now + 1 hour"]
    with pytest.raises(InvalidInput, match="cannot be split"):
        validate_slurm_extra("--begin='now", "rule r")
    assert all(long.startswith("--") for long, _, _ in MANAGED_OPTIONS)


def test_account_and_partition() -> None:
    assert account_and_partition({"slurm_account": "p1, p2", "slurm_partition": "debug"},
                                 account="x", partition="y") == ["-A", "p1", "-p", "debug"]
    assert account_and_partition({}, account="x", partition="y") == ["-A", "x", "-p", "y"]
    assert account_and_partition({}, account=None, partition=None) == []


def test_srun_step_options() -> None:
    assert srun_options({}, 2) == ["-n1", "--cpu-bind=q", "--cpus-per-task=2"]
    assert srun_options({"gpu": 2}, 1)[-1] == "--gpus=2"
    assert srun_options({"cpus_per_task": -1}, 1) == ["-n1", "--cpu-bind=q"]
    with pytest.raises(InvalidInput, match="resource gpus='2'"):
        srun_options({"gpus": "2"}, 1)


def test_multi_task() -> None:
    assert is_multi_task({"tasks": 4}) and is_multi_task({"mpi": True, "tasks_per_node": 2})
    assert not is_multi_task({"tasks": 1}) and not is_multi_task({})
