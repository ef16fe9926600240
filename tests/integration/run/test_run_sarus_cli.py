"""Issue 13, "Command line", in real containers: --verbose/--debug levels, run --name with
ps and kill."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from hpc_exec import process

from .conftest import hpc_exec_exe

RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)

pytestmark = pytest.mark.requires("root", "runc", "squashfs")


def test_verbose_is_a_level_between_quiet_and_debug(run_site: RunSite) -> None:
    """item 15: --verbose says what runs (image, command, hooks, bundle); --debug adds every
    external command; neither changes the container's output."""
    quiet = run_site.run("run", run_site.small, "echo", "hi")
    verbose = run_site.run("--verbose", "run", run_site.small, "echo", "hi")
    debug = run_site.run("--debug", "run", run_site.small, "echo", "hi")
    for done in (quiet, verbose, debug):
        assert done.returncode == 0, done.stderr
        assert done.stdout == "hi\n"
    assert quiet.stderr == ""
    said = verbose.stderr.splitlines()
    assert any(line.startswith("hpc-exec: image ") and ".squashfs" in line for line in said)
    assert "hpc-exec: command: echo hi (in /)" in said
    assert any(line.startswith("hpc-exec: hooks selected: ") for line in said)
    assert any(line.startswith("hpc-exec: bundle in ") for line in said)
    assert "hpc-exec: the container exited with status 0" in said
    assert not any(" run --bundle " in line for line in said)  # runc's argv: debug only
    assert set(said) <= set(debug.stderr.splitlines())
    assert any(" run --bundle " in line for line in debug.stderr.splitlines())


def test_run_name_ps_and_kill(run_site: RunSite) -> None:
    """item 17: run --name NAME, 'hpc-exec ps' lists it, 'hpc-exec kill NAME' ends it (SIGHUP,
    as Sarus), a name in use is refused."""
    name = f"issue13-{time.monotonic_ns() % 10**9}"
    out = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    child = process.launch([hpc_exec_exe(), "run", "--name", name, "--init", run_site.small,
                            "sleep", "120"], env=run_site.env, desc="hpc-exec run --name",
                           stdout=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            listed = run_site.run("ps", check=True).stdout
            if any(line.split()[:1] == [name] and "running" in line
                   for line in listed.splitlines()):
                break
            assert child.poll() is None, "the container ended early"
            assert time.monotonic() < deadline, listed
            time.sleep(0.2)
        again = run_site.run("run", "-n", name, run_site.small, "true")
        assert again.returncode == 110
        assert f"container name '{name}' is in use" in again.stderr
        assert run_site.run("kill", name).returncode == 0
        assert child.wait(timeout=60) == 128 + 1  # SIGHUP, through tini
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        out.close()
    assert name not in run_site.run("ps", check=True).stdout
    gone = run_site.run("kill", name)
    assert gone.returncode == 110 and f"no running container named '{name}'" in gone.stderr
