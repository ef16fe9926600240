"""Hostile or odd input, late validation, long silent waits, small untruths (issue 12, items
10-13): each gives a documented exit code and a one-line message, never ``internal error``
(125) and never a hang."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

pytestmark = pytest.mark.requires("root", "squashfs")

SMALL = "testbed/busybox:latest"


def _one_error(out: process.Completed, code: int, *needles: str) -> None:
    """Exit ``code``, one error line (plus at most a hint) containing every needle."""
    assert out.returncode == code, out.stderr
    lines = [line for line in out.stderr.splitlines()  # not progress lines, not warnings
             if line.startswith("hpc-exec: ") and "warning:" not in line]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("hpc-exec: error: "), out.stderr
    assert all(n in lines[0] for n in needles), out.stderr
    if len(lines) == 2:
        assert lines[1].startswith("hpc-exec: hint: "), out.stderr


# -- item 10: references -------------------------------------------------------------------------

@pytest.mark.parametrize("ref,code,needle", [
    ("busybox:lätest", 110, "bad tag 'lätest'"),
    ("127.0.0.1:99999999999/x", 110, "bad port '99999999999'"),
    ("127.0.0.1:0/x", 110, "bad port '0'"),
    ("[::1]:1/x", 114, "cannot reach registry https://[::1]:1"),
])
def test_odd_references(fsite: Any, ref: str, code: int, needle: str) -> None:
    out = fsite.hx("pull", ref, home=fsite.root / "A", timeout=120,
                   config=fsite.write_config("registryRetries: 0\n", "noretry.yaml"))
    _one_error(out, code, needle)


# -- item 10: config, hooks.d and index files --------------------------------------------------

def _deep_json(n: int = 100_000) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("content,needle", [
    (_deep_json(), "nested too deeply"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    (b"tempDir: /tmp\n# caf\xe9\n", "is not UTF-8 text"),
    ("a: [\n b: c\n", "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 3"),
])
def test_hostile_site_configs(fsite: Any, content: str | bytes, needle: str) -> None:
    path = fsite.root / "hostile.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.chmod(path, 0o644)
    out = fsite.hx("images", home=fsite.root / "A", config=path, timeout=60)
    _one_error(out, 111, needle)


def test_a_device_or_a_fifo_as_site_config(fsite: Any) -> None:
    out = fsite.hx("images", home=fsite.root / "A", config=Path("/dev/zero"), timeout=60)
    _one_error(out, 111, "/dev/zero is not a regular file")
    fifo = fsite.root / "fifo"
    os.mkfifo(fifo)
    out = fsite.hx("images", home=fsite.root / "A", config=fifo, timeout=60)  # no writer
    _one_error(out, 111, f"{fifo} is not a regular file")


@pytest.mark.requires("runc")
@pytest.mark.parametrize("content,needle", [
    (_deep_json(), "nested too deeply"),
    (b'{"version": "1.0.0", "x": "\xff"}', "is not UTF-8 text"),
    (json.dumps({"version": "1.0.0", "hook": {"path": "/bin/true",
                                              "timeout": 99999999999999999999},
                 "when": {"always": True}, "stages": ["prestart"]}),
     "hook.timeout: 99999999999999999999 s is more than"),
    (json.dumps({"version": "1.0.0", "hook": {"path": "/bin/true"},
                 "when": {"annotations": {"(" * 5000 + ")" * 5000: "x"}},
                 "stages": ["prestart"]}), "invalid regular expression"),
])
def test_hostile_hook_files(fsite: Any, content: str | bytes, needle: str) -> None:
    hooks = fsite.root / "hooks.d"
    hooks.mkdir(mode=0o755)
    (hooks / "10-bad.json").write_bytes(content if isinstance(content, bytes)
                                        else content.encode())
    os.chmod(hooks / "10-bad.json", 0o644)
    config = fsite.write_config(fsite.config.read_text() + f"hooksDir: {hooks}\n", "h.yaml")
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home, config=config).returncode == 0
    out = fsite.hx("run", ref, "true", home=home, config=config, timeout=60)
    _one_error(out, 111, str(hooks / "10-bad.json"), needle)


def test_a_hostile_index(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    (home / "metadata.json").write_text(_deep_json())
    _one_error(fsite.hx("images", home=home), 117, "is not valid JSON (nested too deeply)")
    (home / "metadata.json").write_bytes(b'{"version": 1, "images": {"\xff": 1}}')
    _one_error(fsite.hx("images", home=home), 117, "is not valid JSON")


@pytest.mark.requires("runc")
def test_a_bundle_dir_that_cannot_be_made(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    config = fsite.write_config(fsite.config.read_text() + "bundleDir: /proc/bundle\n", "b.yaml")
    out = fsite.hx("run", ref, "true", home=home, config=config, timeout=60)
    _one_error(out, 121, "bundleDir /proc/bundle")


# -- item 10: full filesystems -------------------------------------------------------------------

def _in_small_tmpfs(fsite: Any, mountpoint: Path, args: list[str], **env: str
                    ) -> process.Completed:
    """``hpc-exec ARGS`` with a 16 MiB tmpfs at ``mountpoint``, in a private mount namespace
    (gone with the command)."""
    mountpoint.mkdir(exist_ok=True)
    script = f'mount -t tmpfs -o size=16m tmpfs {mountpoint} && chmod 1777 {mountpoint} && "$@"'
    return process.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", *fsite.argv(args)], env=fsite.env(**env), timeout=600, cwd="/",
                       check=False, desc="hpc-exec with a small tmpfs")


def test_a_full_repository_is_named(fsite: Any, testbed: Any) -> None:
    home = fsite.root / "small-home"
    out = _in_small_tmpfs(fsite, home, ["pull", testbed.image_python],
                          HPC_EXEC_HOME=str(home))
    _one_error(out, 117, "no space left on the filesystem of", str(home))


def test_a_full_temp_dir_is_named(fsite: Any, testbed: Any) -> None:
    temp = fsite.root / "small-temp"
    out = _in_small_tmpfs(fsite, temp, ["pull", "--temp-dir", str(temp), testbed.image_python],
                          HPC_EXEC_HOME=str(fsite.root / "A"))
    _one_error(out, 117, "no space left on the filesystem of", str(temp))


# -- item 11: validation before work -------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("squashfs: {level: 999}\n", "squashfs.level: 999 is not a zstd level (1 to 22)"),
    ("squashfs: {compression: gzip, level: 0}\n", "squashfs.level: 0 is not a gzip level"),
    ("siteMounts: [42]\n", "config key siteMounts[0]"),
    ("registryTimeoutMs: 0\n", "config key registryTimeoutMs"),
])
def test_bad_config_values_fail_before_any_download(fsite: Any, text: str, needle: str) -> None:
    config = fsite.write_config(fsite.config.read_text() + text, "v.yaml")
    home = fsite.root / "A"
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=home, config=config)
    _one_error(out, 111, needle)
    assert not (home / "pulls.log").exists()


@pytest.mark.requires("runc")
def test_a_missing_site_mount_source_names_its_config_key(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    config = fsite.write_config(fsite.config.read_text() +
                                'siteMounts: ["type=bind,src=/nonexistent,dst=/x"]\n', "m.yaml")
    out = fsite.hx("run", ref, "true", home=home, config=config, timeout=60)
    _one_error(out, 111, "config key siteMounts[0]", "/nonexistent does not exist")


# -- item 12: waits ------------------------------------------------------------------------------

@pytest.mark.requires("runc")
def test_a_held_index_lock_is_waited_for_once(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    config = fsite.write_config(fsite.config.read_text() +
                                "repositoryMetadataLockTimings: {timeoutMs: 1500, "
                                "warningMs: 500}\n", "lock.yaml")
    fd = os.open(home / "metadata.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out = fsite.hx("run", ref, "true", home=home, config=config, timeout=60)
    finally:
        os.close(fd)
    assert out.returncode == 116, out.stderr
    # one wait of 1.5 s warns at 0.5 s and 1 s: not a second wait, not each line twice
    warnings = [line for line in out.stderr.splitlines() if "still waiting" in line]
    assert 1 <= len(warnings) <= 2, out.stderr
    assert out.stderr.count("timed out after 1.5 s waiting for lock") == 1


def test_a_registry_that_never_answers_is_retried_visibly_and_bounded(fsite: Any) -> None:
    import socket

    with socket.socket() as server:  # accepts connections (backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        config = fsite.write_config(f'insecureRegistries: ["{address}"]\n'
                                    "registryTimeoutMs: 300\nregistryRetries: 2\n", "slow.yaml")
        out = fsite.hx("pull", f"{address}/x:1", home=fsite.root / "A", config=config,
                       timeout=120)
    assert out.returncode == 114, out.stderr
    assert out.stderr.count("retry ") == 2, out.stderr  # "retry 1 of 2", "retry 2 of 2"
    assert "no answer within 0.3 s" in out.stderr
    assert "insecureRegistries" not in out.stderr  # the hint fits only a TLS/plain mix-up


# -- item 13: small untruths ---------------------------------------------------------------------

def test_a_missing_squashfs_path_is_named_as_a_file(fsite: Any) -> None:
    for path in ("/nonexistent/image", "./img.squashfs", "rel.sqfs"):
        out = fsite.hx("run", path, "true", home=fsite.root / "A", timeout=60)
        _one_error(out, 112, f"squashfs file {path} does not exist")


def test_a_digest_reference_is_echoed_with_an_at(fsite: Any) -> None:
    home = fsite.root / "A"
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=home)
    assert out.returncode == 0, out.stderr
    digest = json.loads(fsite.hx("images", "--json", home=home).stdout)[0]["digest"]
    ref = f"{fsite.registry}/testbed/busybox@{digest}"
    out = fsite.hx("pull", ref, home=home)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert f"busybox:{digest}" not in text and f"busybox@{digest}" in text
    assert "pulled by another process" not in text  # it was this repository's own tag
    # a digest the registry does not have: its 404 names the reference as given
    absent = "sha256:" + "a" * 64
    for name in (f"{fsite.registry}/testbed/busybox", f"{fsite.registry}/testbed/busybox:x"):
        out = fsite.hx("pull", f"{name}@{absent}", home=home)
        _one_error(out, 112, f"image {fsite.registry}/testbed/busybox@{absent} not found")
    out = fsite.hx("run", f"{fsite.registry}/testbed/busybox@{absent}", "true", home=home)
    _one_error(out, 112, f"busybox@{absent} is not in the local repository")


@pytest.mark.requires("runc")
def test_a_runc_failure_is_said_once(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    out = fsite.hx("run", ref, "/no/such/program", home=home, timeout=60)
    assert out.returncode == 121, out.stderr
    runc_lines = [line for line in out.stderr.splitlines() if "/no/such/program" in line]
    assert len(runc_lines) == 1, out.stderr  # runc's own line, not repeated by hpc-exec
    assert out.stderr.rstrip().endswith(
        "hpc-exec: error: runc failed (its error is the line above)"), out.stderr
