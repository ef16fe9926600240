"""The runc driver (argv, JSON log), the status a signal gives, and Secret redaction at the one
point every process entry goes through: pure, so a broken rule fails here, not only on a
cluster."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
from hpc_exec.engine.runtime import runc
from hpc_exec.engine.runtime.run import _run_runc

from hpc_exec import process


def test_run_argv_rootful() -> None:
    argv = runc.run_argv("/usr/sbin/runc", bundle=Path("/b"), container_id="hpc-exec-7",
                         state_dir=Path("/b/state"), log_path=Path("/b/log.json"),
                         pid_file=Path("/b/pid"), rootless=False)
    assert argv == ["/usr/sbin/runc", "--root", "/b/state", "--log", "/b/log.json",
                    "--log-format", "json", "run", "--bundle", "/b", "--pid-file", "/b/pid",
                    "--no-new-keyring", "hpc-exec-7"]


def test_run_argv_rootless_with_pmi_fd() -> None:
    argv = runc.run_argv("runc", bundle=Path("/b"), container_id="c", state_dir=Path("/s"),
                         log_path=Path("/l"), pid_file=Path("/p"), rootless=True,
                         preserve_fds=1)
    assert argv[argv.index("--rootless") + 1] == "true"
    assert argv.index("--rootless") < argv.index("run")  # a global option of runc
    assert argv[argv.index("--preserve-fds") + 1] == "1" and argv[-1] == "c"


def test_log_errors_picks_error_and_fatal_entries_in_order() -> None:
    log = "\n".join([
        json.dumps({"level": "info", "msg": "starting"}),
        "not json at all",
        json.dumps({"level": "error", "msg": "  exec: \"nope\": not found "}),
        "",
        json.dumps(["a", "list"]),
        json.dumps({"level": "warning", "msg": "cgroup"}),
        json.dumps({"level": "fatal", "msg": "container_linux.go: failed"}),
    ])
    assert runc.log_errors(log) == ['exec: "nope": not found', "container_linux.go: failed"]
    assert runc.log_errors(json.dumps({"level": "info", "msg": "x"})) == []


class _Child:
    def __init__(self, rc: int) -> None:
        self.pid = 999_999_999
        self._rc = rc

    def wait(self) -> int:
        return self._rc


class _FakeProcess:
    def __init__(self, rc: int) -> None:
        self.rc = rc
        self.calls: list[Any] = []

    def launch(self, argv: list[str], **kwargs: Any) -> _Child:
        self.calls.append((argv, kwargs))
        return _Child(self.rc)


@pytest.mark.parametrize(("rc", "status"), [(0, 0), (3, 3), (-signal.SIGKILL, 137),
                                            (-signal.SIGTERM, 143)])
def test_runc_status_and_signals(rc: int, status: int) -> None:
    fake = _FakeProcess(rc)
    assert _run_runc(["runc", "run"], fake) == status
    assert fake.calls[0][1]["own_process_group"] is True


def test_signal_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    _run_runc(["runc"], _FakeProcess(0))
    assert signal.getsignal(signal.SIGTERM) is before


def test_prepare_redacts_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hpc_exec.process")
    _exe, plain, safe = process._prepare(["true", "--password", process.Secret("hunter2")],
                                        "running", "login")
    assert plain[-1] == "hunter2"  # the program gets the real value
    assert safe == ["true", "--password", "****"]
    assert "hunter2" not in caplog.text and "****" in caplog.text


def test_proc_stat_reads_our_own_process() -> None:
    import os

    st = process.proc_stat(os.getpid())
    assert st is not None and st.state in ("R", "S")
    assert (st.ppid, st.pgrp, st.session) == (os.getppid(), os.getpgrp(), os.getsid(0))
    assert os.getpid() in process.session_members(os.getsid(0))
    assert process.proc_stat(2**22 + 7) is None and not process.alive(2**22 + 7)
