"""Fixtures for the end-to-end tests of ``snakemake --executor hpc-container`` on the testbed.

* ``smk`` (session): a scratch root under /tmp (the engine refuses to bind a workdir under
  /var, which ``shared_tmp`` uses; /tmp is shared by every testbed node), a fresh image cache
  (``HPC_EXEC_HOME``) so that "pulled exactly once" is visible in its ``pulls.log``, and a site
  config derived from the testbed's with a ``hooksDir`` holding the global-sync hook, wrapped
  so that it records each release in ``sync.log``.
* ``Smk.launch`` starts the ``snakemake`` of the test interpreter's environment, with the
  testbed's variables, in the background.
* ``e2e`` (session): the two long runs, the example workflow (test_example.py) and the
  scenarios (scenarios.smk, test_scenarios.py), started together in the background, so that
  their waits overlap; each module's tests share its run's result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from hpc_exec import process

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SUBMITTED = re.compile(r"^Job (\S+) submitted as Slurm job (\d+) \(log: (.+)\)$", re.MULTILINE)
RUN_ID = re.compile(r"^hpc-container run id \(Slurm job name\): (\S+)$", re.MULTILINE)


@dataclass
class Smk:
    root: Path
    env: dict[str, str]
    testbed: Any

    @property
    def cache(self) -> Path:
        return Path(self.env["HPC_EXEC_HOME"])

    @property
    def sync_log(self) -> Path:
        return self.root / "sync.log"

    def workdir(self, name: str, snakefile: str | None = None,
                copy_from: Path | None = None) -> Path:
        wd = self.root / name
        if copy_from is not None:
            shutil.copytree(copy_from, wd)
        else:
            wd.mkdir()
        if snakefile is not None:
            (wd / "Snakefile").write_text(snakefile)
        return wd

    def argv(self, *args: str) -> list[str]:
        return [str(BIN / "snakemake"), "--executor", "hpc-container", *args]

    def launch(self, workdir: Path, out: IO[bytes], *args: str) -> Any:
        return process.launch(self.argv(*args), cwd=workdir, env=self.env, stdout=out,
                              stderr=out, desc="snakemake --executor hpc-container")

    def scontrol_job(self, job_id: str) -> str:
        return process.run(["scontrol", "show", "job", "-o", job_id], env=self.env,
                           timeout=60, desc="scontrol show job").stdout

    def queued(self, run_id: str, *, all_states: bool = False) -> dict[str, str]:
        """Job id -> state of the run's jobs in squeue (default: only unfinished ones)."""
        argv = ["squeue", "--noheader", f"--name={run_id}", "--format=%i|%T"]
        if all_states:
            argv.append("--states=all")
        out = process.run(argv, env=self.env, timeout=60, desc="squeue").stdout
        return dict(line.split("|", 1) for line in out.split())


class Background:
    """A Snakemake run in the background; :meth:`result` waits for it (bounded)."""

    def __init__(self, smk: Smk, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.log = workdir.parent / f"{workdir.name}.out"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in result()/stop()
        self.proc = smk.launch(workdir, self._out, *args)
        self._result: dict[str, Any] | None = None

    def result(self, timeout: float = 900) -> dict[str, Any]:
        """{"wd", "returncode", "output"}; AssertionError if it runs longer than ``timeout``."""
        if self._result is None:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"snakemake in {self.workdir} ran over {timeout:g} s")
                time.sleep(0.5)
            self._out.close()
            self._result = {"wd": self.workdir, "returncode": self.proc.returncode,
                            "output": self.log.read_text(errors="replace")}
        return self._result

    def stop(self) -> None:
        """Ctrl-C (the executor scancels its jobs), then kill if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 120
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def submitted(output: str) -> dict[str, tuple[str, Path]]:
    """Snakemake job id -> (Slurm job id, log path), from the executor's log lines."""
    return {m[1]: (m[2], Path(m[3])) for m in SUBMITTED.finditer(output)}


def _sync_hook(hooks_dir: Path, base: Path, log: Path) -> None:
    from hpc_exec.hooks import fill_sample, sample_values

    sample = ROOT / "hooks" / "samples" / "09-slurm-global-sync-hook.json"
    hook = json.loads(fill_sample(sample.read_text(), sample_values(
        HOOK_BASE_DIR=str(base), MPI_LIBS="", MPI_DEPENDENCY_LIBS="", GLIBC_LIBS="")))
    real = " ".join(hook["hook"]["args"])  # python -I -S .../slurm_global_sync.py
    hook["hook"]["path"] = "/bin/sh"
    hook["hook"]["args"] = ["sh", "-c",
                            f'{real}; rc=$?; echo "released $rc" >> {log}; exit $rc']
    hook["hook"]["env"] = [e.replace("SYNC_TIMEOUT=300", "SYNC_TIMEOUT=120")
                           for e in hook["hook"]["env"]]
    (hooks_dir / sample.name).write_text(json.dumps(hook, indent=2))


@pytest.fixture(scope="session")
def smk(testbed: Any) -> Iterator[Smk]:
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-smk-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        hooks_dir = root / "hooks.d"
        hooks_dir.mkdir()
        _sync_hook(hooks_dir, root / "sync", root / "sync.log")
        import yaml  # the site config is YAML (JSON is YAML too)

        site = yaml.safe_load(Path(testbed.env["HPC_EXEC_CONFIG"]).read_text()) or {}
        site["hooksDir"] = str(hooks_dir)
        (root / "site.yaml").write_text(json.dumps(site))
        env = testbed.environ(HPC_EXEC_HOME=str(root / "cache"),
                              HPC_EXEC_CONFIG=str(root / "site.yaml"),
                              PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        yield Smk(root, env, testbed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e(smk: Smk) -> Iterator[dict[str, Background]]:
    runs = {
        "example": Background(smk, smk.workdir("example", copy_from=ROOT / "workflows" /
                                               "snakemake"), "--profile", "profile",
                              "--jobs", "20"),
        "scenarios": Background(smk, smk.workdir("scenarios",
                                                 (HERE / "scenarios.smk").read_text()),
                                "--jobs", "20", "--keep-going", "--retries", "1",
                                "--latency-wait", "5"),
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()
