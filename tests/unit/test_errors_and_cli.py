"""The exit-code table is API: unique codes, documented in docs/exit-codes.md, used by the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc_exec import __version__, cli, errors

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def test_exit_codes_are_unique() -> None:
    values = [c.value for c in errors.ExitCode]
    assert len(values) == len(set(values))


def test_every_exit_code_is_documented() -> None:
    documented = {int(m.group(1)): m.group(2) for m in
                  re.finditer(r"^\|\s*(\d+)\s*\|\s*`(\w+)`", DOCS.read_text(), re.MULTILINE)}
    assert documented == {c.value: c.name for c in errors.ExitCode}


# The class -> code table, pinned: a class that lost its own code (and fell back to the root's
# FAILURE) or moved to another would change the CLI's documented exit codes.
CODES = {
    "HpcExecError": 1, "InvalidInput": 110, "ConfigError": 111, "ImageNotFound": 112,
    "AuthenticationFailed": 113, "RegistryError": 114, "ImageContentError": 115,
    "LockTimeout": 116, "RepositoryError": 117, "CommandFailed": 118, "CommandTimeout": 118,
    "MissingDependency": 119, "TestbedError": 120, "RuntimeFailure": 121, "SecurityError": 122, "SlurmOutputError": 118,
}


def test_every_public_error_maps_to_its_code() -> None:
    classes = {name: getattr(errors, name) for name in errors.__all__
               if isinstance(getattr(errors, name), type)
               and issubclass(getattr(errors, name), errors.HpcExecError)}
    assert {name: int(cls.exit_code) for name, cls in classes.items()} == CODES


def test_missing_dependency_names_the_package() -> None:
    err = errors.MissingDependency("slurmd", "slurmd")
    assert "slurmd" in str(err) and "apt-get install slurmd" in (err.hint or "")


def test_command_failed_keeps_last_stderr_line() -> None:
    err = errors.CommandFailed("mounting", ["mount", "x"], 32, "noise\nmount: bad superblock\n")
    assert str(err) == "mounting failed (exit 32): mount: bad superblock"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"hpc-exec {__version__}"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_error_is_one_line_with_hint(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_args: object) -> int:
        raise errors.InvalidInput("port 99999 is bad", hint="use another")

    monkeypatch.setattr("hpc_exec.testbed.cli.dispatch", boom)
    parser = cli.build_parser()
    args = parser.parse_args(["testbed", "status"])
    args.handler = boom
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(parser, args))
    assert cli.main(["testbed", "status"]) == errors.ExitCode.INVALID_INPUT
    err = capsys.readouterr().err.splitlines()
    assert err == ["hpc-exec: error: port 99999 is bad", "hpc-exec: hint: use another"]


class _Fixed:
    def __init__(self, parser: object, args: object) -> None:
        self.args = args

    def parse_args(self, _argv: object) -> object:
        return self.args

    def parse_known_args(self, _argv: object) -> tuple[object, list[str]]:
        return self.args, []
