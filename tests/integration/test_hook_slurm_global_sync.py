"""The Slurm global sync hook across 12 tasks on the 3 testbed nodes (srun -N3 -n12).

Each task runs the hook as runc would (OCI state on stdin, bundle config.json with the task's
SLURM_* env, only the hook env), after a random delay; tests/integration/_hook_rank.py records
the wall clock before and after the hook. Containers are not involved, so the barrier itself is
what is tested; the same clock serves all testbed nodes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

RANK_SCRIPT = Path(__file__).with_name("_hook_rank.py")
NTASKS = 12


def run_step(testbed: Any, tmp_path: Path, delays: dict[int, float],
             hook_env: dict[str, str]) -> list[dict[str, Any]]:
    out = tmp_path / "out"
    out.mkdir()
    delay_arg = ",".join(f"{r}:{d:.3f}" for r, d in delays.items())
    process.run(["srun", "-N3", f"-n{NTASKS}", "--kill-on-bad-exit=0", sys.executable,
                 str(RANK_SCRIPT), "slurm-global-sync", str(out), delay_arg,
                 json.dumps(hook_env)],
                env=testbed.environ(), timeout=120, desc="running the sync hook on 12 tasks")
    results = [json.loads((out / f"{r}.json").read_text()) for r in range(NTASKS)]
    assert {r["host"] for r in results} == {"node1", "node2", "node3"}
    return results


def hook_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOOK_BASE_DIR": str(tmp_path / "base"), "PASSWD_FILE": "/etc/passwd",
            "HOOK_LOG_LEVEL": "debug", **extra}


def step_dirs(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "base").glob("*/.oci-hooks/slurm-global-sync/*")
            if p.is_dir()]


@pytest.mark.requires("slurm")
def test_no_rank_is_released_before_the_last_arrival(testbed: Any, tmp_path: Path) -> None:
    rng = random.Random(5)
    delays = {r: rng.uniform(0, 1.5) for r in rng.sample(range(NTASKS), 5)}
    results = run_step(testbed, tmp_path, delays, hook_env(tmp_path))
    assert [r["rc"] for r in results] == [0] * NTASKS, [r["stderr"] for r in results]
    last_start = max(float(r["start"]) for r in results)
    assert all(float(r["end"]) >= last_start for r in results)
    assert step_dirs(tmp_path) == []


@pytest.mark.requires("slurm")
def test_a_missing_rank_fails_every_rank_and_leaves_no_sync_dir(testbed: Any,
                                                                tmp_path: Path) -> None:
    results = run_step(testbed, tmp_path, {7: 6.0}, hook_env(tmp_path, SYNC_TIMEOUT="2"))
    for r in results:
        assert r["rc"] == 1
        if r["rank"] != 7:
            assert "rank(s) 7 of 12 did not arrive within the 2 s timeout (SYNC_TIMEOUT)" \
                in str(r["stderr"])
            # failed within its own timeout (plus start-up), not at the late rank's arrival
            assert float(r["end"]) < float(results[7]["start"])
        else:  # the late rank learns at once that the barrier failed without it
            assert "the barrier had already failed: rank(s) 7 of 12" in str(r["stderr"])
    assert step_dirs(tmp_path) == []
