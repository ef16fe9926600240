"""Failures, retries, time limits, group jobs and a 4-task rule: one Snakemake run of
scenarios.smk with ``--keep-going --retries 1`` whose independent rules each show one
behaviour, shared by the tests of this module (the time limit, about a minute, bounds the whole
run; it runs in the background beside the example's, see conftest.py).

* ``good``: a native rule that must finish although others fail (--keep-going);
* ``noimage``: an image the registry does not have: fails at once, with the pull's message,
  before any Slurm job;
* ``flaky``: fails on its first attempt (its command exits 3, so the job's Snakemake exits 1),
  succeeds on the retry;
* ``slow``: ``runtime=1`` (minute) and ``sleep 600``: Slurm's time limit ends it;
* ``left`` (busybox) + ``right`` (Debian) + ``joined``: one group job; left and right each wait
  for the other's arrival file, so they pass only if they run at the same time;
* ``ranks``: ``tasks=4`` in the Debian image: four containers, one per task, released together
  by the global-sync hook (the session's site config has it; it logs each release).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import RUN_ID, Background, Smk, submitted

pytestmark = pytest.mark.requires("root", "runc", "slurm", "registry")



@pytest.fixture(scope="module")
def scenarios(e2e: dict[str, Background]) -> dict[str, Any]:
    result = dict(e2e["scenarios"].result())
    run_id = RUN_ID.search(result["output"])
    result["run_id"] = run_id[1] if run_id else None
    return result


def error_block(output: str, rule: str) -> str:
    """The text Snakemake printed for a failed job of ``rule`` (first occurrence)."""
    m = re.search(rf"^Error in rule {rule}:\n((?:[ \t].*\n)+)", output, re.MULTILINE)
    assert m is not None, f"no error for rule {rule} in:\n{output[-4000:]}"
    return m[1]


def test_missing_image_fails_at_once_and_keep_going_finishes_the_rest(
        scenarios: dict[str, Any], smk: Smk) -> None:
    wd, output = scenarios["wd"], scenarios["output"]
    assert scenarios["returncode"] == 1, output[-3000:]
    assert (wd / "good.txt").read_text() == "good\n"
    block = error_block(output, "noimage")
    image = f"docker://{smk.testbed.registry}/testbed/does-not-exist:1"
    assert f"pulling its image {image} failed: " in block
    assert "Slurm job" not in block  # never submitted
    assert not (wd / "noimage.txt").exists()


def test_failing_rule_names_log_and_job_id_and_is_retried(scenarios: dict[str, Any]) -> None:
    output = scenarios["output"]
    block = error_block(output, "flaky")
    m = re.search(r"message: Slurm job (\d+) exited with status 1; log: (\S+\.log)", block)
    assert m is not None, block
    log = Path(m[2])
    assert log.name == f"{m[1]}.log" and log.parent.name == "flaky"
    assert "failing on purpose" in log.read_text()  # kept: the job failed
    assert "Trying to restart job" in output
    assert (scenarios["wd"] / "flaky.txt").read_text() == "ok\n"


def test_time_limit_fails_with_slurms_reason_and_the_run_ends(scenarios: dict[str, Any],
                                                              smk: Smk) -> None:
    block = error_block(scenarios["output"], "slow")
    assert re.search(r"Slurm job \d+ reached its time limit \(Slurm state TIMEOUT, "
                     r"reason TimeLimit\); log: \S+\.log", block), block
    assert not (scenarios["wd"] / "slow.txt").exists()
    assert scenarios["run_id"] is not None
    assert smk.queued(scenarios["run_id"]) == {}  # nothing of the run left in squeue


def test_group_with_two_images_runs_its_members_in_parallel(scenarios: dict[str, Any]) -> None:
    wd = scenarios["wd"]
    assert (wd / "joined.txt").read_text() == "busybox\ndebian\n", scenarios["output"][-3000:]
    group_logs = [log for _, log in submitted(scenarios["output"]).values()
                  if log.parent.name == "group_pair"]
    assert len(group_logs) == 1  # one Slurm job for the three members


def test_four_task_rule_starts_four_containers_through_the_barrier(
        scenarios: dict[str, Any], smk: Smk) -> None:
    text = (scenarios["wd"] / "ranks.txt").read_text()
    lines = sorted(text.splitlines())
    assert [line.split()[1] for line in lines] == ["0", "1", "2", "3"], text
    assert {line.split(" ", 2)[2] for line in lines} == {
        f"of 4 step {lines[0].split()[5]} os=debian"}, text  # one step, all in the image
    assert smk.sync_log.read_text().splitlines() == ["released 0"] * 4
