"""Issue 13, "Command line": where a Sarus user relies on Sarus' command-line behaviour."""

from __future__ import annotations

import pytest

from hpc_exec.engine.runtime.options import ImageConfig, process_args


# -- item 11 -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("entrypoint", "expected"), [
    ("echo hello", ["echo", "hello", "x"]),
    ("  python3   -u\tmain.py ", ["python3", "-u", "main.py", "x"]),
    ("cat", ["cat", "x"]),
    ("", ["x"]),
])
def test_entrypoint_is_split_into_words_as_sarus_does(entrypoint: str,
                                                     expected: list[str]) -> None:
    image = ImageConfig(entrypoint=("/bin/echo",), cmd=("hi",))
    assert process_args(image, ["x"], entrypoint) == expected


# -- item 16 -----------------------------------------------------------------------------------

def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from hpc_exec.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2  # USAGE (docs/exit-codes.md)
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("argv", [["--bogus"], ["--bogus", "images"], ["images", "--bogus"],
                                  ["run", "--bogus", "img", "true"]])
def test_an_unknown_option_is_named(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _usage_error(argv, capsys) == "hpc-exec: error: unknown option '--bogus'"


@pytest.mark.parametrize(("argv", "option"), [
    (["run", "--workdir", "/a", "-w", "/b", "img"], "-w/--workdir"),
    (["run", "--pid", "host", "--pid", "private", "img"], "--pid"),
    (["run", "--entrypoint", "a", "--entrypoint", "b", "img"], "--entrypoint"),
    (["run", "--mpi-type=a", "--mpi-type=b", "img"], "--mpi-type"),
    (["pull", "--temp-dir", "/a", "--temp-dir", "/b", "img"], "--temp-dir"),
])
def test_a_single_value_option_given_twice_is_an_error(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _usage_error(argv, capsys).endswith(f"option {option} may be given only once")


@pytest.mark.parametrize(("argv", "option"), [
    (["run", "--mpi-type", "", "img"], "--mpi-type"),
    (["run", "--mpi-type=", "img"], "--mpi-type"),
    (["pull", "--username", "", "--password-stdin", "img"], "--username"),
])
def test_empty_mpi_type_and_username_are_refused(argv: list[str], option: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _usage_error(argv, capsys).endswith(
        f"argument {option}: an empty value is not allowed")


def test_options_after_the_image_still_belong_to_the_container() -> None:
    from hpc_exec.cli import build_parser

    args = build_parser("run").parse_args(["run", "-w", "/a", "img", "-w", "/b", "--bogus"])
    assert args.workdir == "/a" and args.command == ["-w", "/b", "--bogus"]
