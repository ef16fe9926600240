"""hooks/_state.py: JSON decoding, OCI state and bundle parsing, passwd lookup, settings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hpc_exec.hooks import HOOKS, command, module_path
from hpc_exec.hooks._state import (
    HookError,
    Log,
    State,
    env_seconds,
    load_json,
    parse_env,
    passwd_entry,
    read_container,
    run_hook,
)


@pytest.mark.parametrize("text", [
    '{"a": [1, 2.5, -3e2, true, false, null, "x\\u00e9\\n"], "b": {}}',
    '  [ ]  ', '"s"', "12", '{"ociVersion": "1.0.2", "pid": 42}\n',
])
def test_load_json_matches_json(text: str) -> None:
    assert load_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "nope"])
def test_load_json_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        load_json(text)


def test_state_parse() -> None:
    state = State.parse('{"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 7,'
                        ' "bundle": "/b", "annotations": {"k": "v"}}')
    assert (state.id, state.status, state.pid, state.bundle, state.annotations) == (
        "c1", "creating", 7, "/b", {"k": "v"})


@pytest.mark.parametrize("text, words", [
    ("not json", "not JSON"), ("[]", "not a JSON object"), ('{"pid": 1}', "bundle"),
    ('{"bundle": "rel"}', "bundle"), ('{"bundle": "/b", "pid": -1}', "pid"),
])
def test_state_parse_errors(text: str, words: str) -> None:
    with pytest.raises(HookError, match=words):
        State.parse(text)


def test_parse_env_later_entries_win() -> None:
    assert parse_env(["A=1", "B=x=y", "A=2", "junk", "=v", "E="]) == {
        "A": "2", "B": "x=y", "E": ""}


def make_bundle(tmp_path: Path, env: list[str], uid: int = 1000) -> io.StringIO:
    (tmp_path / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"user": {"uid": uid, "gid": 100}, "env": env}}))
    return io.StringIO(json.dumps({"ociVersion": "1.0.2", "id": "c", "status": "creating",
                                   "pid": 1, "bundle": str(tmp_path)}))


def test_read_container(tmp_path: Path) -> None:
    c = read_container(make_bundle(tmp_path, ["PATH=/bin", "X=1"]))
    assert c.env == {"PATH": "/bin", "X": "1"}
    assert (c.uid, c.gid) == (1000, 100)
    assert c.rootfs == str(tmp_path / "rootfs")
    assert c.in_rootfs("/usr/lib") == str(tmp_path / "rootfs/usr/lib")


@pytest.mark.parametrize(("uid_map", "gid_map", "expected"), [
    ("         0       1001          1\n", "0 1002 1\n", (1001, 1002)),  # rootless hpc-exec
    ("0 0 4294967295\n", "0 0 4294967295\n", None),  # the host
    ("0 1001 1\n1 100000 65536\n", "0 1001 1\n", None),  # subordinate ids: not ours
    ("1001 0 1\n", "1001 0 1\n", None),  # inside the idmap helper's namespace
    ("0 0 1\n", "0 0 1\n", None),  # root mapped to root: not a rootless caller
])
def test_rootless_caller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uid_map: str,
                         gid_map: str, expected: tuple[int, int] | None) -> None:
    import builtins

    from hpc_exec.hooks import _state

    files = {"/proc/self/uid_map": uid_map, "/proc/self/gid_map": gid_map}
    real_open = builtins.open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if path in files:
            return io.StringIO(files[str(path)])
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", fake_open)
    assert _state.rootless_caller() == expected
    config_uid = 0
    c = read_container(make_bundle(tmp_path, ["PATH=/bin"], uid=config_uid))
    if expected is None:
        assert (c.uid, c.rootless, c.owner) == (0, False, (0, 100))
    else:
        assert (c.uid, c.gid, c.rootless, c.owner) == (*expected, True, (0, 0))


def test_read_container_without_config(tmp_path: Path) -> None:
    stdin = io.StringIO(json.dumps({"bundle": str(tmp_path / "nope")}))
    with pytest.raises(HookError, match="config.json"):
        read_container(stdin)


PASSWD = """\
root:x:0:0:root:/root:/bin/bash
# comment
+nis
broken:x:notanumber:0::/:/bin/sh
alice:x:1000:100:Alice:/home/alice:/bin/bash
alias:x:1000:100::/home/alias:/bin/sh
short:x:7
"""


def test_passwd_entry(tmp_path: Path) -> None:
    f = tmp_path / "passwd"
    f.write_text(PASSWD)
    alice = passwd_entry(str(f), 1000)  # the first entry with the uid wins
    assert (alice.name, alice.uid, alice.gid, alice.home, alice.shell) == (
        "alice", 1000, 100, "/home/alice", "/bin/bash")
    assert passwd_entry(str(f), 0).name == "root"
    with pytest.raises(HookError, match="user id 7 is not in PASSWD_FILE"):
        passwd_entry(str(f), 7)
    with pytest.raises(HookError, match="cannot read PASSWD_FILE"):
        passwd_entry(str(tmp_path / "missing"), 0)


def test_env_seconds() -> None:
    assert env_seconds({}, "T", 3.0) == 3.0
    assert env_seconds({"T": " 0.25 "}, "T", 3.0) == 0.25
    for bad in ("x", "0", "-1", "inf", "nan"):
        with pytest.raises(HookError, match="T="):
            env_seconds({"T": bad}, "T", 1.0)


def test_log_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setenv("HOOK_LOG_LEVEL", "warning")
    log = Log("h", out)
    log.debug("d")
    log.info("i")
    log.warning("w")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("[h] [WARNING] w")


def test_run_hook_maps_errors(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    def fails(log: Log) -> int:
        raise HookError("it broke")

    def bug(log: Log) -> int:
        raise KeyError("k")

    assert run_hook("h", lambda log: 0) == 0
    assert run_hook("h", fails) == 1
    assert "[h] [ERROR] it broke" in capsys.readouterr().err
    assert run_hook("h", bug) == 1
    assert "unexpected KeyError" in capsys.readouterr().err


def test_command_and_module_paths() -> None:
    for name in HOOKS:
        assert Path(module_path(name)).is_file()
        argv = command(name, python="/usr/bin/python3")
        assert argv[:3] == ["/usr/bin/python3", "-I", "-S"]
