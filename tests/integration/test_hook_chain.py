"""hooks/_chain.py as runc runs it: one interpreter, one forked child per hook, in order.

No container: a bundle directory with a config.json is all the hooks read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hpc_exec.hooks import module_path

from hpc_exec import process

CHAIN = str(Path(module_path("timestamp")).with_name("_chain.py"))


def _bundle(tmp_path: Path, env: list[str]) -> str:
    (tmp_path / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"user": {"uid": os.getuid(), "gid": os.getgid()}, "env": env}}))
    return json.dumps({"ociVersion": "1.0.2", "id": "c", "status": "created", "pid": 1,
                       "bundle": str(tmp_path)})


def _chain(state: str, links: list[dict[str, object]], timeout: float = 60) -> process.Completed:
    env = {"HPC_EXEC_HOOK_CHAIN": json.dumps(links), "PATH": "/usr/bin:/bin"}
    return process.run([sys.executable, "-I", "-S", CHAIN], input=state, env=env,
                       timeout=timeout, check=False, desc="the hook chain")


def test_hooks_run_in_order_each_in_its_own_process(tmp_path: Path) -> None:
    log = tmp_path / "stamps.log"
    state = _bundle(tmp_path, [f"TIMESTAMP_HOOK_LOGFILE={log}"])
    out = _chain(state, [{"module": "timestamp", "env": ["TIMESTAMP_HOOK_MESSAGE=first"]},
                         {"module": "timestamp", "env": ["TIMESTAMP_HOOK_MESSAGE=second"]},
                         {"module": "timestamp"}])
    assert out.returncode == 0, out.stderr
    lines = log.read_text().splitlines()
    assert [line.rpartition("Timestamp hook: ")[2] for line in lines] == ["first", "second", ""]
    pids = {line.split("] [")[1] for line in lines}
    assert len(pids) == 3  # each hook had its own process (and only its own env)


def test_the_first_failure_stops_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "stamps.log"
    state = _bundle(tmp_path, [f"TIMESTAMP_HOOK_LOGFILE={tmp_path}/no/such/dir/x.log"])
    out = _chain(state, [{"module": "timestamp"},
                         {"module": "timestamp", "env": ["TIMESTAMP_HOOK_LOGFILE=unused"]}])
    assert out.returncode == 1
    assert "x.log" in out.stderr and not log.exists()


def test_a_hook_over_its_timeout_is_killed(tmp_path: Path) -> None:
    # the sync hook waits for rank 1, which never comes; its own timeout (300 s) is far off
    state = _bundle(tmp_path, ["SLURM_JOB_ID=1", "SLURM_STEP_ID=0", "SLURM_NTASKS=2",
                               "SLURM_PROCID=0"])
    out = _chain(state, [{"module": "slurm_global_sync", "timeout": 1,
                          "env": [f"HOOK_BASE_DIR={tmp_path}", "PASSWD_FILE=/etc/passwd"]}])
    assert out.returncode == 124
    assert "slurm_global_sync: killed after its timeout of 1 s" in out.stderr


def test_a_bad_chain_is_one_line(tmp_path: Path) -> None:
    out = _chain(_bundle(tmp_path, []), [{"module": "../../evil"}])
    assert out.returncode == 1
    assert out.stderr.strip() == ("hook chain: HPC_EXEC_HOOK_CHAIN[0]: '../../evil' is not a "
                                  "hook module of hpc-exec")
