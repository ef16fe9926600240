"""Pure parts of the testbed: generated configs, parsers, state records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpc_exec.errors import InvalidInput, TestbedError
from hpc_exec.testbed import daemons, images, registry, slurm
from hpc_exec.testbed.state import TestbedLayout, TestbedState, proc_starttime


def layout(tmp_path: Path) -> TestbedLayout:
    return TestbedLayout(tmp_path / "tb")


def test_slurm_conf_has_one_line_per_node_with_its_port(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    ports = {"slurmctld": 7000, "slurmd-node1": 7001, "slurmd-node2": 7002}
    text = slurm.render_slurm_conf(lay, controller="head", nodes=["node1", "node2"], ports=ports)
    assert "SlurmctldHost=head(127.0.0.1)" in text
    assert "SlurmctldPort=7000" in text
    assert f"AuthInfo=socket={lay.munge_socket}" in text
    assert "SlurmdParameters=config_overrides" in text
    assert "AccountingStorageType=accounting_storage/none" in text
    nodes = [ln for ln in text.splitlines() if ln.startswith("NodeName=")]
    assert [ln.split()[0] for ln in nodes] == ["NodeName=node1", "NodeName=node2"]
    assert "Port=7002" in nodes[1] and "NodeAddr=127.0.0.1" in nodes[1]
    # every path slurm.conf names lies inside the state dir
    for line in text.splitlines():
        for word in line.split("=")[1:]:
            if word.startswith("/") and not word.startswith("/bin/"):
                assert word.startswith(str(lay.root)), line


def test_parse_sinfo_states() -> None:
    out = "node1 idle\nnode2 down*\nnode3 mixed\n\ngarbage line here\n"
    assert slurm.parse_sinfo_states(out) == {"node1": "idle", "node2": "down*",
                                             "node3": "mixed"}


def test_private_registry_config_has_tls_and_htpasswd(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    plain = json.loads(registry.render_registry_config(lay, "plain", 5001, "s"))
    private = json.loads(registry.render_registry_config(lay, "private", 5002, "s"))
    assert plain["http"]["addr"] == "127.0.0.1:5001" and "auth" not in plain
    assert "tls" not in plain["http"]
    assert private["http"]["addr"] == "127.0.0.1:5002"
    assert private["auth"]["htpasswd"]["path"] == str(lay.htpasswd)
    assert private["http"]["tls"]["certificate"].startswith(str(lay.tls_dir))


def test_state_round_trip_and_version_check(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    lay.root.mkdir()
    st = TestbedState(nodes=["node1"], ports={"slurmctld": 1234})
    st.record("me", os.getpid())
    st.save(lay)
    back = TestbedState.load(lay)
    assert back is not None and back.ports == {"slurmctld": 1234}
    rec = back.proc("me")
    assert rec is not None and rec.alive()
    raw = json.loads(lay.state_file.read_text())
    raw["version"] = 99
    lay.state_file.write_text(json.dumps(raw))
    with pytest.raises(TestbedError, match="format version 99"):
        TestbedState.load(lay)


def test_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    st = TestbedState()
    rec = st.record("me", os.getpid())
    rec.starttime += 1  # same pid, another process start: not the one we started
    assert not rec.alive()
    assert proc_starttime(2**22 + 7) is None


def test_unwritable_state_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidInput, match=f"testbed state directory {blocker}/tb is not "
                                           "writable"):
        TestbedLayout(blocker / "tb").ensure()


def test_state_dir_below_private_dir_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(InvalidInput, match="which other users cannot enter"):
        TestbedLayout(private / "tb").ensure()


def test_port_in_use_names_the_port() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"registry port {port} on 127.0.0.1 is already "
                                               "in use"):
            daemons.check_port_free(port, "registry")


def test_debian_mirror_from_deb822_and_one_line_lists(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    (etc / "apt" / "sources.list.d").mkdir(parents=True)
    (etc / "os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert images.debian_mirror(etc) == ("http://mirror.invalid/debian", "bookworm")
    (etc / "apt" / "sources.list.d" / "debian.sources").unlink()
    (etc / "apt" / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://other.invalid/debian bookworm main\n")
    assert images.debian_mirror(etc) == ("http://other.invalid/debian", "bookworm")
    monkeypatch.setenv("HPC_EXEC_TESTBED_DEBIAN_MIRROR", "http://override.invalid/d")
    assert images.debian_mirror(etc)[0] == "http://override.invalid/d"


def test_no_debian_source_is_a_clear_error(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "apt").mkdir(parents=True)
    (etc / "os-release").write_text("VERSION_CODENAME=bookworm\n")
    with pytest.raises(TestbedError, match="no apt source for Debian 'bookworm'"):
        images.debian_mirror(etc)


def test_site_config_lists_the_plain_registry_as_insecure() -> None:
    import yaml

    from hpc_exec.config import parse_settings

    text = registry.render_site_config("127.0.0.1:5001", Path("/tb/etc/hosts"),
                                       Path("/tb/etc/hooks.d"))
    settings = parse_settings(yaml.safe_load(text))
    assert settings.insecure_registries == ("127.0.0.1:5001",)
    assert settings.hosts_file == Path("/tb/etc/hosts")
    assert settings.hooks_dir == Path("/tb/etc/hooks.d")


def test_hosts_file_adds_one_own_loopback_address_per_node() -> None:
    text = slurm.render_hosts("127.0.0.1\tlocalhost\n", ["node1", "node2", "node10"])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["127.0.100.1\tnode1", "127.0.100.2\tnode2", "127.0.100.10\tnode10"]
