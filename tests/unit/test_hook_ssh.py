"""hooks/ssh.py and hpc_exec/cli/ssh.py: the pure parts and the not-applicable paths."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hpc_exec.hooks import ssh
from hpc_exec.hooks._state import Container, HookError, State

from hpc_exec.errors import ConfigError
from hpc_exec.cli.ssh import find_ssh_hook


def run_main(monkeypatch: pytest.MonkeyPatch, bundle: Path, annotations: dict[str, str],
             hook_env: dict[str, str]) -> int:
    (bundle / "config.json").write_text(json.dumps({"process": {"env": [],
                                                                "user": {"uid": 0}}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(
        {"bundle": str(bundle), "annotations": annotations})))
    monkeypatch.setattr("sys.argv", ["hpc-hook-ssh"])
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    for key in ("HOOK_BASE_DIR", "PASSWD_FILE", "SERVER_PORT", "DROPBEAR_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in hook_env.items():
        monkeypatch.setenv(key, value)
    return ssh.main()


def test_not_enabled_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(monkeypatch, tmp_path, {}, {}) == 0
    assert "com.hooks.ssh.enabled is not 'true'" in capsys.readouterr().err


def test_missing_keys_name_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    env = {"HOOK_BASE_DIR": str(tmp_path / "base"), "PASSWD_FILE": str(passwd)}
    assert run_main(monkeypatch, tmp_path, {"com.hooks.ssh.enabled": "true"}, env) == 1
    assert "run 'hpc-exec ssh-keygen' first" in capsys.readouterr().err


@pytest.mark.parametrize("home", ["/nonexistent", "", "relative"])
def test_refuses_homes_it_cannot_use(tmp_path: Path, home: str) -> None:
    (tmp_path / "rootfs/etc").mkdir(parents=True)
    (tmp_path / "rootfs/etc/passwd").write_text(f"u:x:1000:1000::{home}:/bin/sh\n")
    c = Container(State("1.0.2", "c", "creating", 1, str(tmp_path), {}),
                  {"root": {"path": "rootfs"}, "process": {"user": {"uid": 1000}}})
    with pytest.raises(HookError, match="has no usable home directory"):
        ssh._container_home(c)


def test_environment_file_quotes_values() -> None:
    text = ssh._environment({"A": "it's", "PATH": "/bin", "BAD-NAME": "x", "1X": "y"})
    assert text == "export A='it'\"'\"'s'\nexport PATH='/bin'\n"


def test_wrapper_sources_the_environment_for_remote_commands() -> None:
    text = ssh._wrapper(2222)
    assert text.startswith("#!/bin/sh\n")
    assert "-y -p 2222 -i \"$key\"" in text
    assert '". /opt/oci-hooks/ssh/environment; $*"' in text


def test_ssh_keygen_needs_an_ssh_hook_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no SSH hook in the hooks directory"):
        find_ssh_hook(tmp_path)


def test_listen_spec_binds_to_the_nodes_own_address() -> None:
    from hpc_exec.hooks._state import HookError
    from hpc_exec.hooks.ssh import host_address, listen_spec

    hosts = "127.0.0.1 localhost\n# nodes\n127.0.100.2\tnode2 n2  # second\n::1 ip6-localhost\n"
    assert host_address(hosts, "n2") == "127.0.100.2"
    assert host_address(hosts, "node9") is None
    assert listen_spec(15263, "", hosts, "node2") == "15263"
    assert listen_spec(15263, "hostname", hosts, "node2") == "127.0.100.2:15263"
    assert listen_spec(22, "::1", hosts, "node2") == "[::1]:22"
    with pytest.raises(HookError, match="'node9' is not in the container's /etc/hosts"):
        listen_spec(22, "hostname", hosts, "node9")
