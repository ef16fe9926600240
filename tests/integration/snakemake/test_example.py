"""The example workflow (workflows/snakemake) with its stock-plugin profile, unchanged, on the
testbed without accounting: one run, shared by the tests of this module.

It runs with ``--profile profile --executor hpc-container`` (the profile says ``executor:
slurm`` and sets stock resources: slurm_partition, runtime, mem_mb, mem_mb_per_cpu,
cpus_per_task, slurm_extra, set-threads) and a fresh image cache.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from .conftest import RUN_ID, Background, Smk, submitted

pytestmark = pytest.mark.requires("root", "runc", "slurm", "registry")


@pytest.fixture(scope="module")
def example(e2e: dict[str, Background]) -> dict[str, Any]:
    return e2e["example"].result()


def test_workflow_completes_with_each_rule_in_its_image(example: dict[str, Any]) -> None:
    assert example["returncode"] == 0, example["output"][-3000:]
    wd = example["wd"]
    for sample in ("a", "b", "c"):
        greet = (wd / f"results/greet/{sample}.txt").read_text()
        assert f"hello {sample} from busybox" in greet
        assert re.search(r"^greet: os=busybox host-slurm=no node=node\d$", greet, re.MULTILINE), greet
        count = (wd / f"results/count/{sample}.txt").read_text()
        assert count.startswith("8 words\n")
        assert re.search(r"^count: os=debian host-slurm=no node=node\d$", count, re.MULTILINE), count
    report = (wd / "results/report.txt").read_text()
    assert re.search(r"^summarize: os=debian host-slurm=no ", report, re.MULTILINE), report
    # the native rule ran on a node, outside any image: the host's Slurm client is there
    assert re.search(r"^report: os=\S+ host-slurm=yes node=node\d$", report, re.MULTILINE), report


def test_each_image_was_pulled_once_on_the_submit_host(smk: Smk,
                                                       example: dict[str, Any]) -> None:
    assert example["returncode"] == 0
    lines = (smk.cache / "pulls.log").read_text().splitlines()
    converts = [line.split() for line in lines if line.split()[3] == "convert"]
    downloads = [line.split()[4] for line in lines if line.split()[3] == "download"]
    assert len(converts) == 2 and len({c[4] for c in converts}) == 2, lines
    assert len(downloads) == len(set(downloads)), lines  # no blob twice
    assert {line.split()[1] for line in lines} == {socket.gethostname()}  # not on a node
    for image in (smk.testbed.image_small, smk.testbed.image_python):
        assert f"Pulling image docker://{image} once" in example["output"]


def test_the_stock_profile_reached_sbatch(smk: Smk, example: dict[str, Any]) -> None:
    output = example["output"]
    assert example["returncode"] == 0
    run_id = RUN_ID.search(output)
    assert run_id is not None
    jobs = submitted(output)
    assert len(jobs) == 8  # 3 greet, 3 count, summarize, report; 'all' is local
    seen = {}
    for slurm_id, _log in jobs.values():
        line = smk.scontrol_job(slurm_id)
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        assert fields["JobName"] == run_id[1] and fields["Partition"] == "debug"
        assert fields["Nice"] == "10"  # slurm_extra
        seen[fields["Comment"].split("_wildcards_")[0]] = fields
    assert seen["rule_count"]["MinMemoryCPU"] == "300M"  # set-resources mem_mb_per_cpu
    assert seen["rule_count"]["TimeLimit"] == "00:10:00"  # default-resources runtime
    assert seen["rule_summarize"]["TimeLimit"] == "00:05:00"  # set-resources runtime
    assert seen["rule_summarize"]["CPUs/Task"] == "2"  # set-threads
    assert seen["rule_report"]["MinMemoryNode"] == "500M"  # default-resources mem_mb


def test_successful_logs_are_removed_and_no_marker_is_left(example: dict[str, Any]) -> None:
    assert example["returncode"] == 0
    state = example["wd"] / ".snakemake" / "hpc-container"
    assert [p for p in (state / "logs").rglob("*") if p.is_file()] == []
    assert list((state / "status").iterdir()) == []
    assert Path(state / "bin" / "apptainer").resolve().name == "hpc-exec-apptainer"
