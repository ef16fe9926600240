"""Issue 13, "Command line": where a Sarus user relies on Sarus' command-line behaviour."""

from __future__ import annotations

import os
from pathlib import Path

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


# -- items 13 and 14 ---------------------------------------------------------------------------

def _repo(tmp_path: Path) -> object:
    from hpc_exec.config import Settings
    from hpc_exec.engine.image.pull import Repository
    from hpc_exec.engine.store.index import Index
    from hpc_exec.engine.store.layout import Layout

    layout = Layout(tmp_path / "repo")
    return Repository(layout, Index(layout), Settings(temp_dir=tmp_path / "site-tmp"), "local")


@pytest.mark.parametrize("command", ["pull", "load"])
def test_a_temp_dir_that_does_not_exist_is_an_error_not_created(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """issue 13, item 14: Sarus reports an invalid temporary directory; nothing is created
    and, for a pull, no registry is asked."""
    from hpc_exec.cli import main
    from hpc_exec.engine import api
    from hpc_exec.engine.image import pull as _pull

    monkeypatch.setattr(api, "repository", lambda *a, **k: _repo(tmp_path))
    monkeypatch.setattr(_pull, "connect", lambda *a, **k: pytest.fail("registry asked"))
    missing = tmp_path / "no" / "such"
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"")
    argv = [command, "--temp-dir", str(missing),
            *([str(archive)] if command == "load" else []), "busybox"]
    assert main(argv) == 110  # INVALID_INPUT
    assert capsys.readouterr().err.splitlines()[0] == (
        f"hpc-exec: error: invalid temporary directory '{missing}': it does not exist")
    assert not missing.parent.exists()
    (tmp_path / "file").write_text("")
    argv[2] = str(tmp_path / "file")
    assert main(argv) == 110
    assert "it is not a directory" in capsys.readouterr().err


def test_temp_directory_is_absolute_and_the_site_default_stays() -> None:
    from pathlib import Path

    from hpc_exec.engine.image.pull import temp_directory

    assert temp_directory(None, Path("/site")) == Path("/site")
    assert temp_directory(Path("."), Path("/site")) == Path.cwd()


def test_load_refuses_a_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """issue 13, item 13: a digest names a registry's image; Sarus refuses it for load."""
    from hpc_exec.cli import main
    from hpc_exec.engine import api

    monkeypatch.setattr(api, "repository", lambda *a, **k: _repo(tmp_path))
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"")
    digest = "sha256:" + "a" * 64
    assert main(["load", str(archive), f"name@{digest}"]) == 110
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"hpc-exec: error: invalid image reference 'name@{digest}': a loaded image "
                      f"is named by a tag, not a digest ({digest})")
    assert not (tmp_path / "repo").exists()


def test_load_takes_temp_dir() -> None:
    from pathlib import Path

    from hpc_exec.cli import build_parser

    args = build_parser().parse_args(["load", "--temp-dir", "/t", "a.tar", "name"])
    assert args.temp_dir == Path("/t")


# -- item 18 -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "message"), [
    ("type=bind,,src=/a,dst=/b", "empty item in mount"),
    ("type=bind,src=/a,dst=/b,", "empty item in mount"),
    (",type=bind,src=/a,dst=/b", "empty item in mount"),
    ("", "empty item in mount"),
    ("type=bind,src=/a,dst=/d=x", "has more than one '='"),
    ("type=bind,src=/a,dst=/b,bind-propagation=slave", "unknown mount option 'bind-propagation'"),
    ("type=bind,src=/a,dst=/b,bind-propagation=rprivate",
     "unknown mount option 'bind-propagation'"),
])
def test_mount_parsing_is_as_strict_as_sarus(spec: str, message: str) -> None:
    from hpc_exec.errors import InvalidInput
    from hpc_exec.mountspec import parse_mount

    with pytest.raises(InvalidInput, match=message):
        parse_mount(spec)


def test_an_equals_sign_in_a_path_is_escaped() -> None:
    from hpc_exec.mountspec import bind, format_mount, parse_mount

    assert parse_mount(r"type=bind,src=/a\=b,dst=/d").source == "/a=b"
    mount = bind("/x=1,y", "/d=2")
    assert format_mount(mount) == r"type=bind,source=/x\=1\,y,destination=/d\=2"
    assert parse_mount(format_mount(mount)) == mount


def test_a_site_mount_needs_a_type() -> None:
    from hpc_exec.config import parse_settings
    from hpc_exec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"siteMounts\[0\]\.type: missing"):
        parse_settings({"siteMounts": [{"source": "/a", "destination": "/b"}]}, "c")
    ok = parse_settings({"siteMounts": [{"type": "bind", "source": "/a", "destination": "/b"}]},
                        "c")
    assert ok.site_mounts[0].source == "/a"


def test_an_annotation_without_equals_has_an_empty_value() -> None:
    from hpc_exec.engine.runtime.options import parse_annotation
    from hpc_exec.errors import InvalidInput

    assert parse_annotation("com.example.flag") == ("com.example.flag", "")
    assert parse_annotation("k=v=w") == ("k", "v=w")
    for bad in ("", "=v"):
        with pytest.raises(InvalidInput, match="the key is empty"):
            parse_annotation(bad)


@pytest.mark.parametrize(("text", "server", "repository"), [
    ("MyReg/alpine", "MyReg", "alpine"),
    ("MyReg/ns/alpine:1", "MyReg", "ns/alpine"),
    ("Docker.IO/library/alpine", "docker.io", "library/alpine"),
    ("myreg/alpine", "docker.io", "myreg/alpine"),
])
def test_an_uppercase_first_component_is_a_registry(text: str, server: str,
                                                    repository: str) -> None:
    """As in Docker's reference grammar (splitDockerDomain) and Sarus' isDomainLike."""
    from hpc_exec.engine.image.reference import parse

    ref = parse(text)
    assert (ref.server, ref.repository) == (server, repository)
    assert parse(ref.key) == ref  # the key is read back to the same reference


# -- item 19 -----------------------------------------------------------------------------------

def _hook_file(directory: Path, name: str, when: dict[str, object]) -> None:
    import json

    (directory / f"{name}.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/bin/true"}, "when": when,
        "stages": ["createContainer"]}))


@pytest.mark.parametrize(("when", "annotations", "argv0", "selected"), [
    ({"annotations": {"com.acc": "true"}}, {"com.acc.a": "true"}, "/bin/sh", False),
    ({"annotations": {"com.acc": "true"}}, {"com.acc": "true"}, "/bin/sh", True),
    ({"annotations": {"com.acc": "tru"}}, {"com.acc": "true"}, "/bin/sh", False),
    ({"annotations": {"com\\.acc.*": "t.*"}}, {"com.acc.a": "true"}, "/bin/sh", True),
    ({"commands": ["ech"]}, {}, "/bin/echo", False),
    ({"commands": [".*/echo"]}, {}, "/bin/echo", True),
])
def test_when_regexes_match_the_whole_value(tmp_path: Path, when: dict[str, object],
                                            annotations: dict[str, str], argv0: str,
                                            selected: bool) -> None:
    """As Sarus (boost::regex_match) and the OCI hooks schema: the whole key, value, argv[0]."""
    from hpc_exec.engine.runtime.hookconfig import load_hooks, select_hooks

    _hook_file(tmp_path, "10-h", when)
    hooks = load_hooks(tmp_path)
    chosen = select_hooks(hooks, annotations=annotations, argv0=argv0, has_bind_mounts=False)
    assert bool(chosen) is selected


# -- item 20 -----------------------------------------------------------------------------------

def _container(tmp_path: Path, annotations: dict[str, str]) -> object:
    from hpc_exec.hooks._state import Container, State

    return Container(State("1.0.2", "c", "running", 1, str(tmp_path), annotations),
                     {"process": {"env": [], "user": {"uid": os.getuid(), "gid": os.getgid()}},
                      "root": {"path": "rootfs"}})


def test_ssh_port_annotation_overrides_server_port() -> None:
    from hpc_exec.hooks import ssh
    from hpc_exec.hooks._state import HookError

    assert ssh.server_port({}, {}) == 15263
    assert ssh.server_port({"SERVER_PORT": "2222"}, {}) == 2222
    assert ssh.server_port({"SERVER_PORT": "2222"}, {"com.hooks.ssh.port": "3333"}) == 3333
    with pytest.raises(HookError, match="com.hooks.ssh.port='99999' is not a TCP port"):
        ssh.server_port({}, {"com.hooks.ssh.port": "99999"})


def test_authorize_ssh_key_reads_a_public_key_file(tmp_path: Path) -> None:
    from hpc_exec.hooks import ssh
    from hpc_exec.hooks._state import HookError

    container = _container(tmp_path, {})
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3Nza me@laptop\n\necdsa-sha2-nistp256 AAAAE2 other\n")
    assert ssh.read_user_key(container, str(key)) == (  # type: ignore[arg-type]
        "ssh-ed25519 AAAAC3Nza me@laptop\necdsa-sha2-nistp256 AAAAE2 other\n")
    secret = tmp_path / "secret"
    secret.write_text("root:$6$hash:19000::::::\n")
    with pytest.raises(HookError, match="is not a public key file"):
        ssh.read_user_key(container, str(secret))  # type: ignore[arg-type]
    with pytest.raises(HookError, match="cannot read .*/nope: No such file"):
        ssh.read_user_key(container, str(tmp_path / "nope"))  # type: ignore[arg-type]
    with pytest.raises(HookError, match="not an absolute path"):
        ssh.read_user_key(container, "id.pub")  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to show the hook reads as the user")
def test_authorize_ssh_key_is_read_as_the_user_not_as_root(tmp_path: Path) -> None:
    from hpc_exec.hooks import ssh
    from hpc_exec.hooks._state import HookError

    container = _container(tmp_path, {})
    container.uid, container.gid = 65534, 65534  # type: ignore[attr-defined]
    key = tmp_path / "root-only.pub"
    key.write_text("ssh-ed25519 AAAAC3Nza root@host\n")
    key.chmod(0o600)
    with pytest.raises(HookError, match="Permission denied"):
        ssh.read_user_key(container, str(key))  # type: ignore[arg-type]
    assert os.geteuid() == 0 and os.getegid() == 0  # root again afterwards


def test_pidfile_host_gets_a_copy_of_dropbears_pid_file(tmp_path: Path) -> None:
    from hpc_exec.hooks import ssh
    from hpc_exec.hooks._state import HookError

    container = _container(tmp_path, {})
    pid_in_container = tmp_path / "dropbear.pid"
    pid_in_container.write_text("42\n")
    fd = ssh.open_host_pidfile(container, str(tmp_path / "host.pid"))  # type: ignore[arg-type]
    try:
        ssh.copy_pidfile(str(pid_in_container), fd)
    finally:
        os.close(fd)
    assert (tmp_path / "host.pid").read_text() == "42\n"
    fd = ssh.open_host_pidfile(container, str(tmp_path / "other.pid"))  # type: ignore[arg-type]
    try:
        with pytest.raises(HookError, match="wrote no PID file"):
            ssh.copy_pidfile(str(tmp_path / "never"), fd, timeout=0.05)
    finally:
        os.close(fd)
    with pytest.raises(HookError, match="cannot write /no/such/dir/x.pid"):
        ssh.open_host_pidfile(container, "/no/such/dir/x.pid")  # type: ignore[arg-type]
    # pidfile_container is the user's choice and the hook is root: no symlink is followed and
    # nothing but a PID is copied (review finding)
    secret = tmp_path / "secret"
    secret.write_text("root-only 1234\n" * 4)
    (tmp_path / "link.pid").symlink_to(tmp_path / "dropbear.pid")
    for source, match in ((secret, "is not a PID file"), (tmp_path / "link.pid", "wrote no")):
        fd = ssh.open_host_pidfile(container, str(tmp_path / "x.pid"))  # type: ignore[arg-type]
        try:
            with pytest.raises(HookError, match=match):
                ssh.copy_pidfile(str(source), fd, timeout=0.05)
        finally:
            os.close(fd)
    assert (tmp_path / "x.pid").read_text() == ""


# -- item 17 -----------------------------------------------------------------------------------

def test_help_command_prints_a_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    from hpc_exec.cli import main

    assert main(["help", "run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hpc-exec run ") and "--name NAME" in out
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {c}" in out for c in ("help", "ps", "kill", "run", "images"))
    assert _usage_error(["help", "nope"], capsys).endswith("unknown command 'nope' "
                                                           "(hpc-exec help lists them)")


def test_m_is_mpi_and_name_reaches_the_options() -> None:
    from hpc_exec.cli import build_parser
    from hpc_exec.cli.run import options_from_args

    argv = ["run", "-m", "-n", "job-1.a", "img", "true"]
    args = build_parser("run").parse_args(argv)
    options = options_from_args(args, argv)
    assert options.mpi and options.name == "job-1.a"


def test_name_round_trips_and_is_checked() -> None:
    from hpc_exec.cli import build_parser
    from hpc_exec.cli.run import options_from_args
    from hpc_exec.engine.runtime.api import command_line, run_options
    from hpc_exec.errors import InvalidInput

    options = run_options(["true"], name="my-job")
    argv = command_line("img", options)
    assert options_from_args(build_parser("run").parse_args(argv[1:]), argv[1:]) == options
    for bad in ("-x", "a/b", "a b", "x" * 200, ".hidden"):
        with pytest.raises(InvalidInput, match="invalid container name"):
            run_options(["true"], name=bad)


def test_kill_and_ps_commands_exist() -> None:
    from hpc_exec.cli import build_parser

    args = build_parser().parse_args(["kill", "-s", "TERM", "job"])
    assert (args.name, args.signal) == ("job", "TERM")
    assert build_parser().parse_args(["kill", "job"]).signal == "SIGHUP"
    assert build_parser().parse_args(["ps"]).command == "ps"


def test_runc_state_root_is_on_the_host_per_user(tmp_path: Path) -> None:
    from hpc_exec.engine.runtime import runc

    from hpc_exec.errors import SecurityError

    assert runc.state_root(rootless=False) == Path("/run/hpc-exec/runc")
    # the same from a batch job and from a login shell (no /run/user/<uid>)
    assert runc.state_root(rootless=True) == Path(f"/tmp/hpc-exec-runc-{os.getuid()}")
    mine = runc.make_state_root(tmp_path / "a" / "state")
    assert mine.is_dir() and (mine.stat().st_mode & 0o777) == 0o700
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(SecurityError, match="not a directory of yours that only you can"):
        runc.make_state_root(tmp_path / "open")
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(SecurityError):
        runc.make_state_root(tmp_path / "link")
    assert runc.kill_argv("runc", Path("/r"), False, "n", "SIGHUP") == [
        "runc", "--root", "/r", "kill", "n", "SIGHUP"]
    assert runc.default_name() != runc.default_name()


def test_a_name_is_taken_by_one_live_engine_and_freed_when_it_is_gone(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Review findings: a --name whose run is still starting must not be deleted, and what a
    SIGKILLed step left (runc's state, the marker) is swept by the next run or ps."""
    import shutil

    from hpc_exec.engine.runtime import runc

    from hpc_exec.errors import InvalidInput

    root = runc.make_state_root(tmp_path / "state")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> None:  # 'runc delete --force NAME'
        calls.append(argv)
        shutil.rmtree(root / argv[-1])

    monkeypatch.setattr(runc.process, "run", fake_run)
    runc.claim(root, "job", "runc", rootless=False)
    assert runc.engine_alive(root, "job")
    with pytest.raises(InvalidInput, match="container name 'job' is in use"):
        runc.claim(root, "job", "runc", rootless=False)  # a live engine holds it
    (root / "job").mkdir()  # runc's state of a starting container is left alone
    runc.sweep(root, "runc", rootless=False)
    assert (root / "job").is_dir() and calls == []
    runc.release(root, "job")
    assert not runc.engine_alive(root, "job")
    # an engine that died without releasing (SIGKILL of the whole step, watchdog included):
    # its pid may be reused, so the start time must match too
    dead = f"{os.getpid()} 1\n"
    (root / "gone.engine").write_text(dead)
    (root / "gone").mkdir()
    runc.sweep(root, "runc", rootless=False)
    assert not (root / "gone").exists() and not (root / "gone.engine").exists()
    assert calls == [["runc", "--root", str(root), "delete", "--force", "gone"]]
    # a dead engine's name is free again at once; runc's leftover state goes with it
    (root / "job.engine").write_text(dead)
    runc.claim(root, "job", "runc", rootless=False)
    assert runc.engine_alive(root, "job") and not (root / "job").exists()


def test_kill_names_a_bad_signal_and_a_container_that_is_not_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hpc_exec.engine.runtime import api, runc

    from hpc_exec.errors import InvalidInput

    monkeypatch.setattr(runc, "state_root", lambda rootless: tmp_path)
    with pytest.raises(InvalidInput, match="unknown signal 'BOGUS'"):
        api.kill("job", "BOGUS")
    with pytest.raises(InvalidInput, match="no running container named 'job'"):
        api.kill("job", "TERM")


def test_entrypoint_adjacent_empty_value_removes_it() -> None:
    from hpc_exec.cli import build_parser
    from hpc_exec.cli.run import options_from_args

    argv = ["run", "--entrypoint=", "img", "sh"]
    options = options_from_args(build_parser("run").parse_args(argv), argv)
    assert process_args(ImageConfig(entrypoint=("/bin/echo",)), options.command,
                        options.entrypoint) == ["sh"]
