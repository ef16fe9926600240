"""``@container_app``: a fresh container per task, on a ThreadPoolExecutor and on an HTEX
whose (plain, uncontainerised) workers run on the testbed's Slurm nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.requires("root", "slurm", "registry", "runc")


def _config(kind: str, label: str, run_dir: Path) -> Any:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.launchers import SingleNodeLauncher

    from hpc_exec.parsl import FastSlurmProvider

    if kind == "threads":
        executor: Any = ThreadPoolExecutor(label=label, max_threads=4)
    else:
        executor = HighThroughputExecutor(
            label=label, address="127.0.0.1", heartbeat_period=5, heartbeat_threshold=20,
            provider=FastSlurmProvider(partition="debug", init_blocks=1, max_blocks=1,
                                       walltime="00:05:00", exclusive=False,
                                       launcher=SingleNodeLauncher(), status_interval=1))
    return Config(executors=[executor], strategy_period=0.5, run_dir=str(run_dir), retries=0)


APPS = '''
from hpc_exec.parsl import container_app

def make(image, label):
    @container_app(image, executors=[label])
    def shell(text, stdout=None, stderr=None):
        return "cat /etc/os-release; echo " + text + "; echo to-stderr >&2; pwd"

    @container_app(image, executors=[label])
    def words(*argv):
        return ["/bin/echo", *argv]

    @container_app(image, executors=[label])
    def fail(code):
        return f"echo failing; exit {code}"

    return shell, words, fail
'''


# Parsl's bash_app leaves the stdout/stderr files of a task open (remote_side_bash_executor);
# in a ThreadPoolExecutor that happens in this process: a ResourceWarning that is Parsl's.
PARSL_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize("kind", [pytest.param("threads", marks=PARSL_LEAK), "htex-slurm"])
def test_container_apps_run_in_their_image(testbed: Any, parsl_env: Path, slurm_jobs: Any,
                                           kind: str) -> None:
    import parsl
    from parsl.app.errors import BashExitFailure

    from .conftest import cleanup_dfk

    # The apps come from source in a module nothing can import, so that Parsl ships them by
    # value (a plain worker could not import this test module either).
    namespace: dict[str, Any] = {"__name__": "hpc_exec_parsl_test_container_apps"}
    exec(compile(APPS, "<container apps>", "exec"), namespace)  # noqa: S102 - our own source text
    shell, words, fail = namespace["make"](testbed.image_small, slurm_jobs.label)
    out, err = parsl_env / "out.txt", parsl_env / "err.txt"
    dfk = parsl.load(_config(kind, slurm_jobs.label, parsl_env / "runinfo"))
    try:
        assert shell("hello world", stdout=str(out), stderr=str(err)).result(timeout=180) == 0
        assert words("a b", "$HOME").result(timeout=120) == 0
        failing = fail(7)
        with pytest.raises(BashExitFailure) as info:
            failing.result(timeout=120)
        many = [words(str(i)) for i in range(10)]
        assert [f.result(timeout=120) for f in many] == [0] * 10
    finally:
        cleanup_dfk(dfk)
    lines = out.read_text().splitlines()
    assert 'NAME="hpc-exec testbed busybox"' in lines  # the image's os-release, not ours
    assert "hello world" in lines
    assert lines[-1] == str(parsl_env)  # cwd bound and used as the working directory
    assert err.read_text().splitlines()[-1] == "to-stderr"  # after bash_app's own header
    assert info.value.exitcode == 7
    assert slurm_jobs.wait_gone() == []
