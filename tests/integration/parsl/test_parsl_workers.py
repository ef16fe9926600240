"""HTEX worker pools in containers on the testbed's Slurm (issue 11, "What it must show").

Each test runs a real DataFlowKernel with ``strategy_period=0.5``, small blocks and a walltime
limit, under a unique executor label, and checks with ``squeue`` that none of its jobs stays.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.requires("root", "slurm", "registry", "runc")

# Time to wait for blocks to start: other jobs may hold the testbed's nodes for a while.
START_TIMEOUT = 240.0


def _config(label: str, launcher: Any, run_dir: Path, *, blocks: int = 1, nodes: int = 1,
            exclusive: bool = True, status_interval: float = 1.0) -> Any:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

    from hpc_exec.parsl import FastSlurmProvider

    provider = FastSlurmProvider(
        partition="debug", nodes_per_block=nodes, init_blocks=blocks, min_blocks=0,
        max_blocks=blocks, walltime="00:05:00", exclusive=exclusive, launcher=launcher,
        status_interval=status_interval)
    # address: the testbed is one machine; it also avoids parsl.addresses leaking sockets
    return Config(executors=[HighThroughputExecutor(label=label, provider=provider,
                                                    address="127.0.0.1",
                                                    heartbeat_period=5,
                                                    heartbeat_threshold=20)],
                  strategy_period=0.5, run_dir=str(run_dir), retries=0)


WHERE = """
def where():
    import os, socket, sys, time
    import parsl
    time.sleep(0.3)  # long enough that both pools get tasks
    with open("/etc/os-release") as f:
        os_release = f.read()
    return {"host": socket.gethostname(), "os_release": os_release,
            "python": sys.executable, "parsl": parsl.__file__, "uid": os.getuid(),
            "job": os.environ.get("SLURM_JOB_ID"), "cwd": os.getcwd(),
            "marker": os.path.exists("/usr/share/doc/README.hpc-exec")}
"""


def _first_task_fails(config: Any, label: str, timeout: float) -> tuple[BaseException, float]:
    """Load ``config`` and run one app on it, which must fail: (its error, seconds from
    parsl.load to the failure)."""
    import parsl

    from .conftest import cleanup_dfk

    app = _where_app(label)
    start = time.monotonic()
    dfk = parsl.load(config)
    try:
        with pytest.raises(Exception) as info:
            app().result(timeout=timeout)
        return info.value, time.monotonic() - start
    finally:
        cleanup_dfk(dfk)


def _where_app(label: str) -> Any:
    """A python_app reporting what the worker sees. It is made from source in a module of
    its own that nothing can import, so that Parsl (dill) ships it by value: the workers in
    the image cannot import this test module."""
    from parsl.app.app import python_app

    namespace: dict[str, Any] = {"__name__": "hpc_exec_parsl_test_apps"}
    exec(compile(WHERE, "<parsl test app>", "exec"), namespace)  # noqa: S102 - our own source text
    return python_app(namespace["where"], executors=[label])


def _wait_managers(dfk: Any, label: str, count: int) -> None:
    executor = dfk.executors[label]
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if len(executor.connected_managers()) >= count:
            return
        if executor.bad_state_is_set:
            raise AssertionError(f"executor failed: {executor.executor_exception}")
        time.sleep(0.5)
    raise AssertionError(f"{count} worker pools did not connect in {START_TIMEOUT} s")


@pytest.mark.parametrize("layout", ["srun-2-blocks", "single-node-2-blocks",
                                    "srun-1-block-2-nodes"])
def test_python_apps_run_in_the_image_on_two_nodes(testbed: Any, parsl_env: Path,
                                                   slurm_jobs: Any, layout: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import parsl
    from parsl.launchers import SingleNodeLauncher, SrunLauncher

    from hpc_exec import engine
    from hpc_exec.parsl import ContainerLauncher

    from .conftest import cleanup_dfk

    pulls: list[str] = []
    real_pull = engine.pull

    def counting_pull(ref: str, **kwargs: Any) -> Any:
        pulls.append(ref)
        return real_pull(ref, **kwargs)

    monkeypatch.setattr(engine, "pull", counting_pull)
    inner = SingleNodeLauncher() if layout.startswith("single") else SrunLauncher()
    blocks, nodes = (1, 2) if layout.endswith("2-nodes") else (2, 1)
    launcher = ContainerLauncher(testbed.image_parsl, inner=inner)
    config = _config(slurm_jobs.label, launcher, parsl_env / "runinfo", blocks=blocks,
                     nodes=nodes)
    app = _where_app(slurm_jobs.label)
    dfk = parsl.load(config)
    try:
        _wait_managers(dfk, slurm_jobs.label, 2)
        results = [f.result(timeout=120) for f in [app() for _ in range(12)]]
    finally:
        cleanup_dfk(dfk)

    expected = engine.run(testbed.image_parsl, ["cat", "/etc/os-release"], capture=True,
                          timeout=120).stdout
    assert {r["os_release"] for r in results} == {expected}
    assert {r["python"] for r in results} == {"/usr/bin/python3"}  # the image's, not ours
    assert all(r["parsl"].startswith("/usr/local/lib/python3") for r in results)
    assert all(r["marker"] for r in results)  # a file only the image has
    assert {r["uid"] for r in results} == {os.getuid()}
    assert {r["cwd"] for r in results} == {str(parsl_env)}  # cwd bound and used
    hosts = {r["host"] for r in results}
    assert len(hosts) == 2 and hosts <= set(_testbed_nodes()), hosts
    jobs = {r["job"] for r in results}
    assert len(jobs) == blocks and None not in jobs  # SLURM_* passes through
    assert pulls == [testbed.image_parsl]  # once for all blocks, on the submit host
    assert slurm_jobs.wait_gone() == []


def _testbed_nodes() -> list[str]:
    from hpc_exec import process

    out = process.run(["sinfo", "--noheader", "--format=%n"], timeout=30,
                      desc="listing nodes").stdout
    return out.split()


def test_other_parsl_version_fails_fast_with_both_versions(testbed: Any, parsl_env: Path,
                                                           slurm_jobs: Any) -> None:
    """Bound: 15 s from parsl.load (issue 11), the image already in the cache (pulled first,
    as a site does once; the pull's own time is the registry's)."""
    from parsl.version import VERSION

    from hpc_exec import engine
    from hpc_exec.parsl import ContainerLauncher


    engine.pull(testbed.image_parsl_other)
    other = testbed.image_parsl_other.rsplit(":", 1)[1]
    launcher = ContainerLauncher(testbed.image_parsl_other)
    config = _config(slurm_jobs.label, launcher, parsl_env / "runinfo")
    failure, elapsed = _first_task_fails(config, slurm_jobs.label, timeout=60)
    text = str(failure)
    assert f"has parsl {other}, the submit side parsl {VERSION}" in text, text
    assert f"pip install parsl=={VERSION}" in text, text
    assert elapsed < 15, f"the mismatch took {elapsed:.1f} s to surface"
    assert slurm_jobs.ids() == []  # refused before sbatch: no job at all


def test_refused_mount_fails_at_submit_with_the_engine_message(testbed: Any, parsl_env: Path,
                                                               slurm_jobs: Any) -> None:

    from hpc_exec.parsl import ContainerLauncher


    missing = str(parsl_env / "no-such-dir")
    launcher = ContainerLauncher(testbed.image_parsl, binds=[(missing, "/data")])
    config = _config(slurm_jobs.label, launcher, parsl_env / "runinfo")
    failure, elapsed = _first_task_fails(config, slurm_jobs.label, timeout=60)
    assert "cannot start the Parsl check" in str(failure) or missing in str(failure)
    assert missing in str(failure)
    assert elapsed < 15, f"the refused mount took {elapsed:.1f} s to surface"
    assert slurm_jobs.ids() == []


def test_container_that_cannot_start_in_the_job_fails_the_block_fast(
        testbed: Any, parsl_env: Path, slurm_jobs: Any) -> None:
    """The check is off, so the bad mount is met only inside the job (as a path that exists
    on the login node but not on the compute nodes would be): the exit marker and the 1 s
    status interval must report it within 15 s (issue 11), and no job may stay."""

    from hpc_exec.parsl import ContainerLauncher


    missing = str(parsl_env / "no-such-dir")
    launcher = ContainerLauncher(testbed.image_parsl, binds=[(missing, "/data")], check=False)
    config = _config(slurm_jobs.label, launcher, parsl_env / "runinfo", exclusive=False)
    failure, elapsed = _first_task_fails(config, slurm_jobs.label, timeout=120)
    text = str(failure)
    assert "exited with status" in text, text
    assert missing in text, text  # the engine's own message, from the job's stderr
    assert elapsed < 15, f"the failed block took {elapsed:.1f} s to be reported"
    assert slurm_jobs.wait_gone() == []
