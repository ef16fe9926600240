"""hooks.d reading and selection (OCI hooks 1.0.0) and config.json generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hpc_exec.engine.runtime.hookconfig import hooks_by_stage, load_hooks, mpi_types, select_hooks
from hpc_exec.mountspec import Mount as MountSpec
from hpc_exec.engine.runtime.spec import DeviceNode, build_config

from hpc_exec.errors import ConfigError


def _hook(d: Path, name: str, when: dict[str, object], stages: list[str],
          **hook: object) -> None:
    (d / f"{name}.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": f"/usr/bin/{name}", **hook},
        "when": when, "stages": stages}))


def test_load_order_and_selection(tmp_path: Path) -> None:
    _hook(tmp_path, "20-mpi", {"annotations": {"^com.hooks.mpi.enabled$": "^true$",
                                               "^com.hooks.mpi.type$": "^mpich$"}},
          ["prestart"], args=["mpi", "-v"], env=["A=b"], timeout=10)
    _hook(tmp_path, "10-always", {"always": True}, ["createContainer", "poststop"])
    _hook(tmp_path, "30-cmd", {"commands": ["^/bin/sh$"]}, ["prestart"])
    _hook(tmp_path, "40-binds", {"hasBindMounts": True}, ["startContainer"])
    (tmp_path / "README").write_text("not a hook")
    hooks = load_hooks(tmp_path)
    assert [h.name for h in hooks] == ["10-always", "20-mpi", "30-cmd", "40-binds"]
    mpi = {"com.hooks.mpi.enabled": "true", "com.hooks.mpi.type": "mpich"}
    sel = select_hooks(hooks, annotations=mpi, argv0="/bin/sh", has_bind_mounts=False)
    assert [h.name for h in sel] == ["10-always", "20-mpi", "30-cmd"]
    sel = select_hooks(hooks, annotations={"com.hooks.mpi.enabled": "true",
                                           "com.hooks.mpi.type": "openmpi"},
                       argv0="/bin/bash", has_bind_mounts=True)
    assert [h.name for h in sel] == ["10-always", "40-binds"]
    stages = hooks_by_stage(select_hooks(hooks, annotations=mpi, argv0="x",
                                         has_bind_mounts=False))
    assert stages == {"prestart": [{"path": "/usr/bin/20-mpi", "args": ["mpi", "-v"],
                                    "env": ["A=b"], "timeout": 10}],
                      "createContainer": [{"path": "/usr/bin/10-always"}],
                      "poststop": [{"path": "/usr/bin/10-always"}]}
    assert [(h.name, t) for h, t in mpi_types(hooks)] == [("20-mpi", "^mpich$")]


def test_missing_dir_means_no_hooks(tmp_path: Path) -> None:
    assert load_hooks(tmp_path / "nope") == []


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not valid JSON"),
    ('{"version": "2.0", "hook": {"path": "/x"}, "when": {"always": true}, '
     '"stages": ["prestart"]}', "unsupported version '2.0'"),
    ('{"version": "1.0.0", "hook": {"path": "x"}, "when": {"always": true}, '
     '"stages": ["prestart"]}', "hook.path: expected an absolute path, got 'x'"),
    ('{"version": "1.0.0", "hook": {"path": "/x"}, "when": {"always": true}, '
     '"stages": ["prerun"]}', "unknown stage 'prerun'"),
    ('{"version": "1.0.0", "hook": {"path": "/x"}, "when": {"annotations": {"(": "x"}}, '
     '"stages": ["prestart"]}', "invalid regular expression '('"),
    ('{"version": "1.0.0", "hook": {"path": "/x"}, "when": {"sometimes": true}, '
     '"stages": ["prestart"]}', "when: unknown key(s) sometimes"),
    ('{"version": "1.0.0", "hook": {"path": "/x", "timeout": 0}, "when": {"always": true}, '
     '"stages": ["prestart"]}', "hook.timeout: expected a positive integer, got 0"),
])
def test_malformed_hook_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_hooks(tmp_path)
    assert f"hook file {tmp_path / 'bad.json'}:" in str(exc.value)
    assert message in str(exc.value)


def test_config_json_root() -> None:
    cfg = build_config(args=["sh"], env={"A": "1"}, cwd="/w", uid=1000, gid=100,
                       groups=[100, 20, 30], rootfs="rootfs", annotations={"k": "v"},
                       hooks={"prestart": [{"path": "/h"}]},
                       mounts=[MountSpec("/s", "/d", True)],
                       devices=[DeviceNode("/dev/fuse", "c", 10, 229, 0o666, "rw")],
                       init_path="/usr/bin/tini", seccomp={"defaultAction": "SCMP_ACT_ALLOW"},
                       apparmor_profile="ap", selinux_label="sl", selinux_mount_label="ml")
    assert cfg["ociVersion"] == "1.0.2"
    proc = cfg["process"]
    assert proc["user"] == {"uid": 1000, "gid": 100, "additionalGids": [20, 30]}
    assert proc["noNewPrivileges"] is True
    assert all(v == [] for v in proc["capabilities"].values())
    assert proc["args"] == ["/dev/init", "--", "sh"] and proc["env"] == ["A=1"]
    assert proc["apparmorProfile"] == "ap" and proc["selinuxLabel"] == "sl"
    assert cfg["linux"]["namespaces"] == [{"type": "mount"}]  # host network, PID, IPC, UTS
    assert cfg["linux"]["mountLabel"] == "ml"
    assert cfg["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert cfg["linux"]["resources"]["devices"][-1] == {
        "allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}
    bind = next(m for m in cfg["mounts"] if m["destination"] == "/d")
    assert bind["options"] == ["rbind", "nosuid", "nodev", "rprivate", "ro"]
    init = next(m for m in cfg["mounts"] if m["destination"] == "/dev/init")
    assert init["source"] == "/usr/bin/tini"
    assert cfg["hooks"] == {"prestart": [{"path": "/h"}]} and cfg["annotations"] == {"k": "v"}
    assert next(m for m in cfg["mounts"] if m["destination"] == "/proc")["type"] == "proc"


def test_config_json_rootless_and_private_pid() -> None:
    cfg = build_config(args=["sh"], env={}, cwd="/", uid=1000, gid=100, groups=[100, 20],
                       rootfs="rootfs", rootless=True)
    assert cfg["process"]["user"] == {"uid": 0, "gid": 0}  # the caller, mapped to 0
    assert cfg["linux"]["namespaces"] == [{"type": "mount"}]
    assert next(m for m in cfg["mounts"] if m["destination"] == "/proc")["type"] == "bind"
    cfg = build_config(args=["sh"], env={}, cwd="/", uid=0, gid=0, groups=[],
                       rootfs="rootfs", pid_private=True)
    assert {"type": "pid"} in cfg["linux"]["namespaces"]
    assert "hooks" not in cfg and "annotations" not in cfg


def test_runc_argv_preserves_fds_only_when_asked() -> None:
    from pathlib import Path

    from hpc_exec.engine.runtime import runc

    common = dict(bundle=Path("/b"), container_id="c1", state_dir=Path("/s"),
                  log_path=Path("/l"), pid_file=Path("/p"), rootless=False)
    plain = runc.run_argv("runc", **common)  # type: ignore[arg-type]
    assert "--preserve-fds" not in plain and plain[-1] == "c1"
    with_pmi = runc.run_argv("runc", preserve_fds=1, **common)  # type: ignore[arg-type]
    assert with_pmi[-3:] == ["--preserve-fds", "1", "c1"]


def test_pmi_fd_is_used_only_when_it_is_an_open_descriptor() -> None:
    import os

    from hpc_exec.engine.runtime.run import _pmi_fd

    r, w = os.pipe()
    try:
        assert _pmi_fd({"PMI_FD": str(r)}) == r
        assert _pmi_fd({}) is None
        assert _pmi_fd({"PMI_FD": "x"}) is None
    finally:
        os.close(r)
        os.close(w)
    assert _pmi_fd({"PMI_FD": str(r)}) is None  # closed now


# -- the hook chain (mergeHooks) ---------------------------------------------------------------

def _ours(module: str, *extra: str, env: tuple[str, ...] = (), timeout: int | None = 10,
          python: str = "/usr/bin/python3") -> dict[str, Any]:
    from hpc_exec.hooks import module_path

    entry: dict[str, Any] = {"path": python, "args": [python, "-I", "-S", module_path(module),
                                                      *extra]}
    if env:
        entry["env"] = list(env)
    if timeout is not None:
        entry["timeout"] = timeout
    return entry


def test_merge_keeps_order_and_splits_at_foreign_hooks() -> None:
    import json

    from hpc_exec.engine.runtime.hookconfig import merge_python_hooks

    shell = {"path": "/bin/sh", "args": ["sh", "-c", "true"]}
    entries = [_ours("timestamp", env=("TIMESTAMP_HOOK_MESSAGE=a",)),
               _ours("mount", "--mount=type=bind,src=/a,dst=/b", timeout=5),
               shell,
               _ours("glibc", env=("GLIBC_LIBS=/x",)),
               _ours("mpi", python="/other/python3"),  # another interpreter: not chained
               _ours("ssh")]
    out = merge_python_hooks(entries)
    assert len(out) == 5
    first, middle, lonely, other, last = out
    assert first["args"][3].endswith("/hpc_exec/hooks/_chain.py") and first["timeout"] == 17
    chain = json.loads(first["env"][0].partition("=")[2])
    assert first["env"][0].startswith("HPC_EXEC_HOOK_CHAIN=")
    assert chain == [
        {"module": "timestamp", "args": [], "env": ["TIMESTAMP_HOOK_MESSAGE=a"], "timeout": 10},
        {"module": "mount", "args": ["--mount=type=bind,src=/a,dst=/b"], "env": [],
         "timeout": 5}]
    assert middle == shell and lonely == entries[3] and other == entries[4]
    assert last == entries[5]  # a run of one is left alone


def test_merge_drops_the_timeout_when_one_hook_has_none() -> None:
    from hpc_exec.engine.runtime.hookconfig import merge_python_hooks

    out = merge_python_hooks([_ours("timestamp"), _ours("glibc", timeout=None)])
    assert len(out) == 1 and "timeout" not in out[0]


def test_foreign_python_scripts_are_not_chained(tmp_path: Path) -> None:
    from hpc_exec.engine.runtime.hookconfig import chain_key

    (tmp_path / "timestamp.py").write_text("")
    look_alike = {"path": "/usr/bin/python3",
                  "args": ["python3", "-I", "-S", str(tmp_path / "timestamp.py")]}
    assert chain_key(look_alike) is None  # no _chain.py beside it: not our hooks dir
    assert chain_key({"path": "/usr/bin/python3",
                      "args": ["python3", _ours("timestamp")["args"][3]]}) is None  # no -I -S
    assert chain_key(_ours("timestamp")) is not None


def test_hooks_by_stage_merges_only_when_asked() -> None:
    from hpc_exec.engine.runtime.hookconfig import Hook, hooks_by_stage

    def hook(name: str) -> Hook:
        entry = _ours(name)
        return Hook(name, Path(f"/h/{name}.json"), entry["path"], tuple(entry["args"]), (), 10,
                    True, (), (), None, ("createContainer",))

    hooks = [hook("timestamp"), hook("glibc")]
    assert len(hooks_by_stage(hooks)["createContainer"]) == 1
    assert len(hooks_by_stage(hooks, merge=False)["createContainer"]) == 2


@pytest.mark.parametrize(("text", "words"), [
    ("", "not JSON"),
    ("[]", "non-empty list"),
    ('[{"module": "os"}]', "'os' is not a hook module"),
    ('[{"module": "timestamp", "env": "A=1"}]', "env must be a list of strings"),
    ('[{"module": "mount", "args": [1]}]', "args must be a list of strings"),
    ('[{"module": "timestamp", "timeout": 0}]', "timeout must be a positive number"),
])
def test_chain_spec_errors(text: str, words: str) -> None:
    from hpc_exec.hooks._chain import ChainError, parse_chain

    with pytest.raises(ChainError, match=words):
        parse_chain(text)


def test_chain_spec() -> None:
    from hpc_exec.hooks._chain import parse_chain

    assert parse_chain('[{"module": "mount", "args": ["--device=/dev/null"], "env": ["A=1"], '
                       '"timeout": 3}, {"module": "timestamp"}]') == [
        ("mount", ["--device=/dev/null"], ["A=1"], 3.0), ("timestamp", [], [], None)]
