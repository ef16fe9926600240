"""hooks/slurm_global_sync.py: not-applicable paths, settings, and the barrier in threads."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from hpc_exec.hooks import slurm_global_sync as sgs
from hpc_exec.hooks._state import HookError, Log

SLURM = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "4", "SLURM_PROCID": "1"}


def run_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str],
             hook_env: dict[str, str] | None = None) -> int:
    (tmp_path / "config.json").write_text(json.dumps({
        "process": {"user": {"uid": 0, "gid": 0}, "env": [f"{k}={v}" for k, v in env.items()]}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"bundle": str(tmp_path)})))
    for key in ("HOOK_BASE_DIR", "PASSWD_FILE", "SYNC_TIMEOUT", "SYNC_POLL_INTERVAL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    for key, value in (hook_env or {}).items():
        monkeypatch.setenv(key, value)
    return sgs.main()


@pytest.mark.parametrize("drop", sgs.SLURM_VARS)
def test_not_a_slurm_task_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], drop: str) -> None:
    env = {k: v for k, v in SLURM.items() if k != drop}
    assert run_main(monkeypatch, tmp_path, env) == 0  # no HOOK_BASE_DIR needed either
    assert f"[DEBUG] not a Slurm task ({drop} unset" in capsys.readouterr().err


def test_one_task_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    env = dict(SLURM, SLURM_NTASKS="1", SLURM_PROCID="0")
    assert run_main(monkeypatch, tmp_path, env) == 0
    assert "one-task step" in capsys.readouterr().err


@pytest.mark.parametrize("env, hook_env, words", [
    (dict(SLURM, SLURM_PROCID="4"), {}, "SLURM_PROCID=4 is not a rank of SLURM_NTASKS=4"),
    (dict(SLURM, SLURM_NTASKS="x"), {}, "must be integers"),
    (dict(SLURM, SLURM_JOB_ID="../x"), {}, "SLURM_JOB_ID='../x' in the container env"),
    (SLURM, {}, "HOOK_BASE_DIR must be an absolute path"),
    (SLURM, {"HOOK_BASE_DIR": "/tmp"}, "PASSWD_FILE is not set"),
    (SLURM, {"HOOK_BASE_DIR": "/tmp", "PASSWD_FILE": "/nonexistent"}, "cannot read PASSWD_FILE"),
])
def test_misconfiguration_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], env: dict[str, str],
                                hook_env: dict[str, str], words: str) -> None:
    assert run_main(monkeypatch, tmp_path, env, hook_env) == 1
    assert words in capsys.readouterr().err


def test_timeout_setting_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    hook_env = {"HOOK_BASE_DIR": str(tmp_path), "PASSWD_FILE": str(passwd), "SYNC_TIMEOUT": "-5"}
    assert run_main(monkeypatch, tmp_path, SLURM, hook_env) == 1
    assert "SYNC_TIMEOUT='-5' must be a positive number" in capsys.readouterr().err


def test_sync_dir() -> None:
    assert sgs.sync_dir("/b", "alice", "42", "3") == \
        "/b/alice/.oci-hooks/slurm-global-sync/42.3"


def run_ranks(directory: Path, ntasks: int, timeout: float, delays: dict[int, float],
              leaders: set[int] | None = None) -> dict[int, tuple[float, float, str | None]]:
    """Run one Barrier per rank in threads: rank -> (arrival, release, error)."""
    results: dict[int, tuple[float, float, str | None]] = {}

    def rank(r: int) -> None:
        time.sleep(delays.get(r, 0.0))
        arrived = time.monotonic()
        error = None
        try:
            sgs.Barrier(str(directory), r, ntasks, timeout=timeout, poll_interval=0.005,
                        log=Log("t", io.StringIO()),
                        node_leader=leaders is None or r in leaders).run()
        except HookError as exc:
            error = str(exc)
        results[r] = (arrived, time.monotonic(), error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(ntasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout + max(delays.values(), default=0) + 10)
    assert len(results) == ntasks
    return results


def test_barrier_releases_nobody_before_the_last_arrival(tmp_path: Path) -> None:
    directory = tmp_path / "u/.oci-hooks/slurm-global-sync/42.3"
    results = run_ranks(directory, 8, 30, {1: 0.2, 5: 0.4, 0: 0.3})
    last_arrival = max(a for a, _, _ in results.values())
    assert all(err is None for _, _, err in results.values())
    assert min(rel for _, rel, _ in results.values()) >= last_arrival
    assert not directory.exists()


def test_followers_are_released_through_their_leader(tmp_path: Path) -> None:
    directory = tmp_path / "42.4"
    results = run_ranks(directory, 6, 30, {3: 0.3}, leaders={0, 2})
    last_arrival = max(a for a, _, _ in results.values())
    assert all(err is None for _, _, err in results.values())
    assert min(rel for _, rel, _ in results.values()) >= last_arrival
    assert not directory.exists()


def test_barrier_timeout_names_missing_ranks_and_cleans_up(tmp_path: Path) -> None:
    directory = tmp_path / "42.3"
    results = run_ranks(directory, 4, 0.5, {2: 1.0})
    for r in (0, 1, 3):
        err = results[r][2]
        assert err is not None and "rank(s) 2 of 4 did not arrive within the 0.5 s" in err
    late = results[2][2]
    assert late is not None and "the barrier had already failed: rank(s) 2 of 4" in late
    assert not directory.exists()
    assert (tmp_path / "42.3.failed").read_text() == "2\n"


def test_an_old_tombstone_is_ignored(tmp_path: Path) -> None:
    tomb = tmp_path / "42.3.failed"
    tomb.write_text("5\n")
    old = time.time() - 100
    os.utime(tomb, (old, old))
    results = run_ranks(tmp_path / "42.3", 2, 5, {})
    assert [err for _, _, err in results.values()] == [None, None]
    assert not tomb.exists()


def test_rank0_removes_leftovers_of_crashed_steps(tmp_path: Path) -> None:
    parent = tmp_path / "slurm-global-sync"
    old = time.time() - 1000
    crashed = parent / "42.1"
    other_job = parent / "43.0"
    live = parent / "42.2"  # a concurrent step of the same job: fresh, kept
    for d in (crashed / "arrival", other_job / "arrival", live / "arrival"):
        d.mkdir(parents=True)
        (d / "0").touch()
    mine = parent / "42.3"
    (mine / "arrival").mkdir(parents=True)
    (mine / "arrival" / "5").touch()  # a stale arrival of an earlier attempt of this step
    (mine / "arrival" / "1").touch()  # rank 1 of this attempt arrived already
    (mine / "verdict").write_text("go\n")
    for p in (crashed, crashed / "arrival", crashed / "arrival/0", mine / "arrival/5",
              mine / "verdict"):
        os.utime(p, (old, old))
    barrier = sgs.Barrier(str(mine), 0, 8, timeout=10, poll_interval=0.005,
                          log=Log("t", io.StringIO()))
    barrier.clean_leftovers()
    assert not crashed.exists()
    assert other_job.exists() and live.exists()
    assert sorted(os.listdir(mine / "arrival")) == ["1"]
    assert not (mine / "verdict").exists()
