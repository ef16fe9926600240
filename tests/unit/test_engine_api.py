"""The engine's run-side API, pure parts: run_options, the command builder and its round trip
through the ``hpc-exec run`` parser, the one squashfs-path rule, the environment policy, and
errors crossing the process boundary with their fields."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hpc_exec.engine.runtime.api import _rebuild, write_report
from hpc_exec.engine.runtime.options import ImageConfig, merge_environment
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_exec import engine, errors
from hpc_exec.cli import build_parser
from hpc_exec.cli.run import options_from_args
from hpc_exec.mountspec import Device, Mount


def _parse(argv: list[str]) -> tuple[str, engine.RunOptions]:
    assert argv[0] == "hpc-exec"
    args = build_parser().parse_args(argv[1:])
    return args.image, options_from_args(args, argv[1:])


# -- run_options -------------------------------------------------------------------------------

def test_binds_take_any_path_as_a_tuple() -> None:
    opts = engine.run_options(["true"], binds=[("/data/a,b", "/x"), "/s:/t:ro", "/u"])
    assert opts.mounts == (Mount("/data/a,b", "/x"), Mount("/s", "/t", True), Mount("/u", "/u"))


def test_home_binds_and_sets_home() -> None:
    opts = engine.run_options(home="/home/alice")
    assert Mount("/home/alice", "/home/alice") in opts.mounts
    assert ("HOME", "/home/alice") in opts.env


def test_env_and_passthrough() -> None:
    opts = engine.run_options(env={"A": "1"}, env_passthrough=["SLURM_JOB_ID"])
    assert opts.env == (("SLURM_JOB_ID", None), ("A", "1"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"binds": ["a:/b"]}, "mount source must be an absolute path, got 'a'"),
    ({"binds": ["/a:/b:/c:/d"]}, "invalid bind '/a:/b:/c:/d'"),
    ({"env": {"1A": "x"}}, "invalid environment variable name '1A' in env"),
    ({"env_passthrough": ["A B"]}, "invalid environment variable name 'A B'"),
    ({"pid": "guest"}, "invalid --pid 'guest'"),
    ({"pid": "host", "ssh": True}, "--ssh cannot be used with --pid=host"),
    ({"workdir": "rel"}, "workdir must be an absolute path, got 'rel'"),
    ({"mounts": ["type=bind,src=/a"]}, "lacks a destination"),
])
def test_run_options_errors_name_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message.replace("(", r"\(")):
        engine.run_options(**kwargs)  # type: ignore[arg-type]


# -- the command builder and the CLI's parser --------------------------------------------------

def test_comma_path_survives_the_command_line() -> None:
    opts = engine.run_options(["cat", "/x/f"], binds=[("/data/a,b", "/x")])
    argv = engine.command_line("img:1", opts)
    assert argv == ["hpc-exec", "run", r"--mount=type=bind,source=/data/a\,b,destination=/x",
                    "img:1", "--", "cat", "/x/f"]
    assert _parse(argv) == ("img:1", opts)


def test_separator_is_not_part_of_the_command() -> None:
    _, opts = _parse(["hpc-exec", "run", "img", "--", "echo", "--", "x"])
    assert opts.command == ("echo", "--", "x")
    _, opts = _parse(["hpc-exec", "run", "img", "echo", "-e", "x"])
    assert opts.command == ("echo", "-e", "x")
    _, opts = _parse(["hpc-exec", "run", "img", "--", "--", "x"])  # the second is the command's
    assert opts.command == ("--", "x")
    _, opts = _parse(["hpc-exec", "run", "img", "--"])
    assert opts.command == ()


def test_separator_whatever_argparse_did() -> None:
    from hpc_exec.cli.run import container_command

    raw = ["--init", "img", "--", "echo"]
    assert container_command("img", ["--", "echo"], raw) == ["echo"]  # argparse kept it
    assert container_command("img", ["echo"], raw) == ["echo"]  # argparse (3.11) dropped it
    raw = ["img", "--", "--", "x"]
    assert container_command("img", ["--", "x"], raw) == ["--", "x"]
    assert container_command("img", ["--", "--", "x"], raw) == ["--", "x"]


def test_relative_squashfs_is_written_absolute(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = engine.command_line("./img.sqfs", engine.RunOptions())
    assert argv[-2:] == [str(tmp_path / "img.sqfs"), "--"]


_word = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                max_size=6)
_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
_segment = st.text(st.characters(blacklist_characters="/\0:", blacklist_categories=("Cs",)),
                   min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))
_path = st.lists(_segment, min_size=1, max_size=3).map(lambda p: os.path.normpath("/" + "/".join(p)))
_mount = st.builds(lambda s, d, ro: engine.run_options(
    mounts=[Mount(s, d, ro)]).mounts[0], _path, _path, st.booleans())
_device = st.builds(Device, _path, _path, st.sampled_from(("r", "rw", "rwm", "m")))
_options = st.builds(
    engine.RunOptions,
    command=st.lists(st.sampled_from(("--", "-e", "x")) | _word, max_size=4).map(tuple),
    mounts=st.lists(_mount, max_size=3).map(tuple),
    devices=st.lists(_device, max_size=2).map(tuple),
    env=st.lists(st.tuples(_name, st.none() | _word), max_size=3).map(tuple),
    clean_env=st.booleans(),
    workdir=st.none() | _path,
    entrypoint=st.none() | _word,
    init=st.booleans(), pid=st.sampled_from((None, "host", "private")), mpi=st.booleans(),
    mpi_type=st.none() | _name, glibc=st.booleans(), ssh=st.booleans(), sync=st.booleans(),
    annotations=st.lists(st.tuples(_name.map(lambda n: "com." + n), _word), max_size=3)
    .map(tuple),
    tty=st.booleans(), log_level=st.sampled_from((None, "debug")),
    name=st.none() | st.from_regex(r"[a-z0-9][a-z0-9_.+-]{0,10}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(_options, st.sampled_from(("registry.local:5000/ns/img:1.2", "img", "/c/img.sqfs")),
       st.booleans())
def test_command_line_round_trip(options: engine.RunOptions, image: str,
                                 centralized: bool) -> None:
    argv = engine.command_line(image, options, centralized=centralized)
    args = build_parser().parse_args(argv[1:])
    assert args.image == image and args.centralized_repository == centralized
    assert options_from_args(args, argv[1:]) == options


# -- one rule for squashfs paths ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "is_path"), [
    ("/abs/img.sqfs", True), ("./img.sqfs", True), ("../x/img", True), ("img.squashfs", True),
    ("sub/img.sqfs", True), ("registry:5000/ns/img", False), ("img:tag", False),
    ("ns/img", False)])
def test_squashfs_path_rule(text: str, is_path: bool) -> None:
    assert engine.is_squashfs_path(text) is is_path


def test_relative_squashfs_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "img.sqfs").write_bytes(b"hsqs")
    (tmp_path / "img.json").write_text('{"cmd": ["/bin/sh"], "env": ["A=1"]}')
    monkeypatch.chdir(tmp_path)
    image = engine.resolve("./img.sqfs")
    assert image.squashfs == tmp_path / "img.sqfs"
    assert engine.inspect("./img.sqfs").cmd == ("/bin/sh",)
    assert image.config.env == (("A", "1"),)
    with pytest.raises(errors.ImageNotFound, match="squashfs file ./none.sqfs does not exist"):
        engine.resolve("./none.sqfs")


# -- the environment policy ---------------------------------------------------------------------

IMAGE = ImageConfig(env=(("PATH", "/img/bin"), ("LANG", "C"), ("TOOL", "image")))
HOST = {"PATH": "/host/bin", "TOOL": "host", "SLURM_JOB_ID": "7"}


def test_host_then_image_then_user() -> None:
    env = merge_environment(HOST, IMAGE, user=[("X", "1")])
    assert env == {"PATH": "/img/bin", "TOOL": "image", "SLURM_JOB_ID": "7", "LANG": "C",
                   "X": "1"}


def test_passthrough_wins_over_image_and_site() -> None:
    env = merge_environment(HOST, IMAGE, site_set=[("TOOL", "site")], user=[("TOOL", None)])
    assert env["TOOL"] == "host"


def test_clean_env_keeps_only_image_site_and_user() -> None:
    env = merge_environment(HOST, IMAGE, clean=True, site_set=[("S", "1")],
                            user=[("SLURM_JOB_ID", None), ("MISSING", None)])
    assert env == {"PATH": "/img/bin", "LANG": "C", "TOOL": "image", "S": "1",
                   "SLURM_JOB_ID": "7"}


# -- errors cross the process boundary whole -----------------------------------------------------

@pytest.mark.parametrize("exc", [
    errors.CommandFailed("mounting squashfs", ["squashfuse_ll", "x"], 32, "bad superblock"),
    errors.LockTimeout("/repo/metadata.lock", 60.0),
    errors.MissingDependency("runc", "runc"),
    errors.InvalidInput("mount source /x does not exist", hint="create it"),
])
def test_error_report_keeps_class_and_fields(exc: errors.HpcExecError) -> None:
    r, w = os.pipe()
    write_report(w, exc)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        again = _rebuild(f.read())
    assert type(again) is type(exc)
    assert str(again) == str(exc) and again.hint == exc.hint
    assert vars(again) == vars(exc)


def test_unexpected_error_becomes_runtime_failure() -> None:
    r, w = os.pipe()
    write_report(w, KeyError("x"))
    os.close(w)
    with os.fdopen(r, "rb") as f:
        again = _rebuild(f.read())
    assert isinstance(again, errors.RuntimeFailure)
    assert "internal error: KeyError" in str(again)


def test_the_api_surface_is_complete() -> None:
    assert sorted(engine.__all__) == sorted(engine._HOME)
    for name in engine.__all__:
        assert getattr(engine, name) is not None


def test_env_file_keeps_values_off_the_command_line(tmp_path: Path) -> None:
    opts = engine.run_options(["true"], env={"TOKEN": "s3cret", "A": "x,y"},
                              env_passthrough=["SLURM_JOB_ID"])
    env_file = tmp_path / "env.json"
    engine.write_env_file(env_file, opts)
    assert env_file.stat().st_mode & 0o777 == 0o600
    argv = engine.command_line("img", opts, env_file=str(env_file))
    assert not any("s3cret" in a for a in argv)
    assert _parse(argv) == ("img", opts)


@pytest.mark.parametrize("report", [b"not json", b"[1, 2]", b'{"class": 3, "fields": 7}'])
def test_unreadable_report_is_a_runtime_failure(report: bytes) -> None:
    err = _rebuild(report)
    assert isinstance(err, errors.RuntimeFailure) and "cannot be read" in str(err)


def test_huge_error_fields_are_cut_to_fit_the_pipe() -> None:
    exc = errors.CommandFailed("mounting", ["x"], 1, "e" * 200_000)
    r, w = os.pipe()
    write_report(w, exc)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        again = _rebuild(f.read())
    assert isinstance(again, errors.CommandFailed) and again.returncode == 1
    assert 0 < len(again.stderr_tail) <= 16_000
