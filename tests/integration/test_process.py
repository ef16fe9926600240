"""The one subprocess wrapper, against real programs."""

from __future__ import annotations

import logging
import os
import time

import pytest

from hpc_exec import process
from hpc_exec.errors import CommandFailed, CommandTimeout, MissingDependency


def test_output_and_status() -> None:
    out = process.run(["sh", "-c", "echo out; echo err >&2; exit 0"], timeout=30, desc="echo")
    assert (out.returncode, out.stdout, out.stderr) == (0, "out\n", "err\n")


def test_failure_keeps_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as exc:
        process.run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"],
                    timeout=30, desc="failing step")
    assert exc.value.returncode == 3
    assert str(exc.value) == "failing step failed (exit 3): the real reason"


def test_no_check_returns_status() -> None:
    assert process.run(["false"], timeout=30, desc="false", check=False).returncode == 1


def test_stdin_is_null_unless_input_given() -> None:
    assert process.run(["cat"], timeout=30, desc="cat").stdout == ""
    assert process.run(["cat"], timeout=30, desc="cat", input="hello").stdout == "hello"


def test_timeout_kills_the_whole_process_group(tmp_path: object) -> None:
    # The child starts a grandchild that would outlive a plain kill of the child.
    with pytest.raises(CommandTimeout, match="sleeper timed out after 0.5 s"):
        process.run(["sh", "-c", "sleep 30 & echo $! ; wait"], timeout=0.5, desc="sleeper")
    # No 'sleep 30' of ours is left: find children of any sh we started via /proc scan.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        mine = [p for p in os.listdir("/proc") if p.isdigit() and _is_our_sleep(int(p))]
        if not mine:
            break
        time.sleep(0.05)
    assert not mine


def _is_our_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return cmd[:2] == [b"sleep", b"30"] and state not in (b"Z", b"X") and \
        os.getpgid(pid) != os.getpgid(0)


def test_missing_program_names_the_debian_package() -> None:
    process.DEBIAN_PACKAGES["hpc-exec-no-such-tool"] = "hpc-exec-no-such-package"
    try:
        with pytest.raises(MissingDependency) as exc:
            process.run(["hpc-exec-no-such-tool"], timeout=5, desc="x")
    finally:
        del process.DEBIAN_PACKAGES["hpc-exec-no-such-tool"]
    assert "(Debian package 'hpc-exec-no-such-package')" in str(exc.value)


def test_secrets_are_redacted_in_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hpc_exec.process")
    process.run(["true", "--password", process.Secret("hunter2")], timeout=5, desc="t")
    assert "hunter2" not in caplog.text and "****" in caplog.text


def test_secrets_are_redacted_in_errors() -> None:
    with pytest.raises(CommandFailed) as exc:
        process.run(["sh", "-c", "exit 4", "sh", process.Secret("hunter2")], timeout=5,
                    desc="t")
    assert "hunter2" not in repr(exc.value.argv) and "****" in exc.value.argv


def test_every_entry_point_redacts_secrets_in_its_log(caplog: pytest.LogCaptureFixture,
                                                      tmp_path: object) -> None:
    caplog.set_level(logging.DEBUG, logger="hpc_exec.process")
    with process.feed(["sh", "-c", "cat >/dev/null", "sh", process.Secret("hunter2")],
                      timeout=10, desc="feed") as stdin:
        stdin.write(b"")
    child = process.launch(["true", process.Secret("hunter2")], desc="launch")
    child.wait()
    assert "hunter2" not in caplog.text and caplog.text.count("****") == 2
