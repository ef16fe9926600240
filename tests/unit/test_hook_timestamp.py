"""hooks/timestamp.py: the line format, the not-applicable path and appending."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hpc_exec.hooks import timestamp

LINE = re.compile(r"^\[\d+\.\d{9}\] \[[^\]]+-\d+\] \[hook\] \[INFO\] Timestamp hook: (.*)$")


def run_main(monkeypatch: pytest.MonkeyPatch, bundle: Path, env: list[str],
             message: str | None = None) -> int:
    (bundle / "config.json").write_text(json.dumps({"process": {"env": env}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"bundle": str(bundle)})))
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    if message is None:
        monkeypatch.delenv("TIMESTAMP_HOOK_MESSAGE", raising=False)
    else:
        monkeypatch.setenv("TIMESTAMP_HOOK_MESSAGE", message)
    return timestamp.main()


def test_format_line() -> None:
    assert timestamp.format_line(1_552_438_146_000_463_001, "nid7", 16741, "After-runtime") == (
        "[1552438146.000463001] [nid7-16741] [hook] [INFO] Timestamp hook: After-runtime\n")


def test_without_logfile_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(monkeypatch, tmp_path, ["TIMESTAMP_HOOK_LOGFILE="]) == 0
    assert "[DEBUG] TIMESTAMP_HOOK_LOGFILE is unset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_appends_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "ts.log"
    env = [f"TIMESTAMP_HOOK_LOGFILE={log}"]
    assert run_main(monkeypatch, tmp_path, env, "first") == 0
    assert run_main(monkeypatch, tmp_path, env) == 0
    lines = log.read_text().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["first", ""]  # type: ignore[union-attr]


def test_relative_logfile_is_under_the_bundle(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    assert run_main(monkeypatch, tmp_path, ["TIMESTAMP_HOOK_LOGFILE=ts.log"], "m") == 0
    assert (tmp_path / "ts.log").read_text().endswith("Timestamp hook: m\n")


def test_unwritable_logfile_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    env = [f"TIMESTAMP_HOOK_LOGFILE={tmp_path}/missing/dir/ts.log"]
    assert run_main(monkeypatch, tmp_path, env) == 1
    assert "cannot append to TIMESTAMP_HOOK_LOGFILE" in capsys.readouterr().err
