"""One job's sbatch call and the run's files (hpc_exec/snakemake/jobs.py), with stand-in jobs."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpc_exec.errors import InvalidInput
from hpc_exec.snakemake.jobs import (
    NTASKS_VARIABLE,
    RunLayout,
    cluster_of,
    images_of,
    install_frontend,
    submission,
    submit_environment,
)
from hpc_exec.snakemake.settings import ExecutorSettings

EXEC = "/venv/bin/python -m snakemake --snakefile 'Snake file' --mode remote"


class FakeJob:
    def __init__(self, name: str = "count", wildcards: list[str] | None = None,
                 threads: int = 1, image: str | None = None, members: list[Any] | None = None,
                 **resources: Any) -> None:
        self.name, self.jobid, self.threads = name, 7, threads
        self.wildcards = wildcards or []
        self.resources = resources
        self.container_img_url = image
        self.jobs = members or []

    def is_group(self) -> bool:
        return bool(self.jobs)


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    return RunLayout(tmp_path / ".snakemake" / "hpc-container", "run-1")


def test_one_task_job_runs_the_inner_snakemake_under_srun(layout: RunLayout) -> None:
    job = FakeJob(wildcards=["a/b", "x%j"], threads=2, runtime=5, mem_mb=100)
    sub = submission(job, EXEC, layout=layout, workdir=Path("/w d"),
                     settings=ExecutorSettings(partition="debug"))
    log_dir = layout.logs_dir / "count" / "a_b_x_j"
    assert sub.options == [
        "--job-name=run-1", f"--output={log_dir}/%j.log", "--export=ALL",
        "--comment=rule_count_wildcards_a_b_x_j", "--chdir=/w d", "-p", "debug",
        "-t", "5", "--mem", "100", "--ntasks=1", "--cpus-per-task=2"]
    assert sub.log("42") == log_dir / "42.log"
    lines = sub.script.splitlines()
    assert f"export PATH={shlex.quote(str(layout.bin_dir))}:\"$PATH\"" in lines
    command = shlex.split(next(line for line in lines if line.startswith("srun ")))
    assert command == ["srun", "-n1", "--cpu-bind=q", "--cpus-per-task=2", "/bin/sh", "-c",
                       EXEC]
    assert str(layout.status_dir) in sub.script and NTASKS_VARIABLE not in sub.script
    assert not log_dir.exists()  # the caller creates it


def test_multi_task_job_has_no_srun_and_tells_the_front_end(layout: RunLayout) -> None:
    sub = submission(FakeJob(tasks=4), EXEC, layout=layout, workdir=Path("/w"),
                     settings=ExecutorSettings())
    assert "--ntasks=4" in sub.options
    lines = sub.script.splitlines()
    assert f"export {NTASKS_VARIABLE}=4" in lines
    assert not any(line.startswith("srun") for line in lines)
    assert shlex.split(next(line for line in lines if line.startswith("/bin/sh"))) == [
        "/bin/sh", "-c", EXEC]
    mpi = submission(FakeJob(mpi=True, tasks_per_node=2, nodes=3), EXEC, layout=layout,
                     workdir=Path("/w"), settings=ExecutorSettings())
    assert f"export {NTASKS_VARIABLE}=6" in mpi.script.splitlines()


def test_group_job_logs_and_images(layout: RunLayout) -> None:
    a = FakeJob("a", image="docker://r/x:1")
    b = FakeJob("b", image="docker://r/y:1")
    c = FakeJob("c")
    group = FakeJob("g1_a_b_c", members=[a, b, c], threads=2)
    group.groupid = "g1"  # type: ignore[attr-defined]
    assert images_of(group) == ["docker://r/x:1", "docker://r/y:1"]
    assert images_of(c) == [] and images_of(a) == ["docker://r/x:1"]
    sub = submission(group, EXEC, layout=layout, workdir=Path("/w"),
                     settings=ExecutorSettings())
    assert f"--output={layout.logs_dir / 'group_g1'}/%j.log" in sub.options
    assert "--comment=group_g1" in sub.options and "--cpus-per-task=2" in sub.options


def test_bad_resources_fail_with_one_line(layout: RunLayout) -> None:
    with pytest.raises(InvalidInput, match="^slurm_extra of rule count sets --mem, "):
        submission(FakeJob(slurm_extra="--mem=1G"), EXEC, layout=layout, workdir=Path("/w"),
                   settings=ExecutorSettings())


def test_layout_paths(layout: RunLayout) -> None:
    layout.create()
    assert layout.bin_dir.is_dir() and layout.images_dir.is_dir()
    assert layout.status_dir == layout.root / "status" / "run-1"
    assert layout.marker("12") == layout.status_dir / "12.exit"
    assert layout.log_dir(FakeJob("r", wildcards=[".."])) == layout.logs_dir / "r" / "_.."
    assert layout.log_dir(FakeJob("r")) == layout.logs_dir / "r"


def test_submit_environment_keeps_slurm_conf_only() -> None:
    env = submit_environment({"SLURM_CONF": "/c", "SLURM_JOB_ID": "3", "SLURM_MEM_PER_CPU": "1",
                              "SBATCH_ACCOUNT": "a", "PATH": "/bin", "SLURM_CLUSTERS": "x"})
    assert env == {"SLURM_CONF": "/c", "SBATCH_ACCOUNT": "a", "PATH": "/bin",
                   "SLURM_CLUSTERS": "x"}


def test_install_frontend_links_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir()
    venv.mkdir()
    script = venv / "hpc-exec-apptainer"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert install_frontend(bin_dir, beside=venv) == script
    assert os.readlink(bin_dir / "apptainer") == str(script)
    assert install_frontend(bin_dir, beside=venv) == script  # again: replaced, no error
    assert sorted(p.name for p in bin_dir.iterdir()) == ["apptainer"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert install_frontend(bin_dir, beside=tmp_path / "empty") is None


def test_wildcard_values_with_spaces_are_safe(layout: RunLayout) -> None:
    job = SimpleNamespace(name="r", wildcards=["a b", "c"], is_group=lambda: False)
    assert layout.log_dir(job) == layout.logs_dir / "r" / "a_b_c"


def test_cluster_of() -> None:
    assert cluster_of(FakeJob(slurm_cluster="c2")) == "c2"
    assert cluster_of(FakeJob(cluster="c1", slurm_cluster="c2")) == "c1"  # stock order
    assert cluster_of(FakeJob()) is None
