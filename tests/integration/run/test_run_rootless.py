"""hpc-exec run as an unprivileged user (rootless): squashfuse_ll, overlay and runc inside a
user namespace, no setuid helper.

The pytest interpreter lives under /root (mode 0700), out of reach of another user, so the
fixture copies the installed hpc_exec package into a world-readable directory and runs it with
Debian's /usr/bin/python3 as the user ``hpcexec-test`` (created if missing).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from ..conftest import SYSTEM_PYTHON, TEST_USER, copy_package

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "fuse", "userfuse", "userns",
                                  "system-python")

USER = TEST_USER
RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)


@dataclass
class Rootless:
    root: Path
    image: Path  # a squashfs file (with its metadata beside it)
    uid: int
    gid: int
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120,
            supplementary: str | None = None) -> process.Completed:
        # runuser makes the first -G group the primary one unless -g names it
        extra = ["-g", USER, "-G", supplementary] if supplementary else []
        return process.run(["runuser", "-u", USER, *extra, "--", SYSTEM_PYTHON, "-m",
                            "hpc_exec", "run", *args], timeout=timeout, env=self.env,
                           cwd=self.root, check=False, desc="hpc-exec run (rootless)")


@pytest.fixture(scope="module")
def rootless(run_site: RunSite, test_user: pwd.struct_passwd) -> Iterator[Rootless]:
    pw = test_user
    root = run_site.root / "rootless"
    root.mkdir(mode=0o755)
    copy_package(root / "py")
    squashfs = run_site.squashfs_of(run_site.small)
    image = root / "small.sqfs"
    shutil.copyfile(squashfs, image)
    meta = json.loads(squashfs.with_suffix(".json").read_text()) \
        if squashfs.with_suffix(".json").exists() else {}
    (root / "small.json").write_text(json.dumps(meta or {"cmd": ["/bin/sh"]}))
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    data = root / "data"
    data.mkdir()
    os.chown(data, pw.pw_uid, pw.pw_gid)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "PYTHONPATH": str(root / "py"), "HPC_EXEC_CONFIG": str(run_site.config),
           "LANG": "C.UTF-8"}
    yield Rootless(root, image, pw.pw_uid, pw.pw_gid, env)


def test_rootless_image_and_identity(rootless: Rootless) -> None:
    out = rootless.run(str(rootless.image), "sh", "-c",
                       "cat /etc/os-release; echo ID $(id -u) $(id -g); "
                       "grep Cap /proc/self/status")
    assert out.returncode == 0, out.stderr
    assert "ID=busybox" in out.stdout
    lines = out.stdout.splitlines()
    # the idmap helper maps the caller's own numbers (docs/run.md, "Rootless mode")
    assert f"ID {rootless.uid} {rootless.gid}" in lines
    caps = [line.split() for line in lines if line.startswith("Cap")]
    assert len(caps) == 5 and all(value == "0000000000000000" for _, value in caps), caps


def test_rootless_files_belong_to_the_caller(rootless: Rootless) -> None:
    data = rootless.root / "data"
    out = rootless.run("--mount", f"type=bind,src={data},dst=/data", str(rootless.image),
                       "touch", "/data/made-inside")
    assert out.returncode == 0, out.stderr
    st = os.stat(data / "made-inside")
    assert (st.st_uid, st.st_gid) == (rootless.uid, rootless.gid)


def test_rootless_supplementary_groups_still_grant_access(rootless: Rootless) -> None:
    # setgroups is denied in an unprivileged user namespace, so the caller's supplementary
    # groups cannot be mapped (they show as the overflow gid), but the kernel still checks
    # them: a file only that group may read stays readable (docs/run.md, "Rootless mode").
    group = grp.getgrnam("audio")
    secret = rootless.root / "group-only"
    secret.mkdir()
    (secret / "note").write_text("for the group\n")
    os.chown(secret / "note", 0, group.gr_gid)
    os.chmod(secret / "note", 0o640)
    out = rootless.run("--mount", f"type=bind,src={secret},dst=/g,readonly",
                       str(rootless.image), "sh", "-c", "cat /g/note; id -G",
                       supplementary="audio")
    assert out.returncode == 0, out.stderr
    text, ids = out.stdout.splitlines()
    assert text == "for the group"
    assert ids.split()[0] == str(rootless.gid) and len(ids.split()) == 2
    out = rootless.run("--mount", f"type=bind,src={secret},dst=/g,readonly",
                       str(rootless.image), "cat", "/g/note")
    assert out.returncode != 0 and "Permission denied" in out.stderr


def test_rootless_readonly_mount(rootless: Rootless) -> None:
    data = rootless.root / "data"
    out = rootless.run("--mount", f"type=bind,src={data},dst=/data,readonly",
                       str(rootless.image), "sh", "-c",
                       "touch /data/nope && echo WROTE || echo REFUSED")
    assert "REFUSED" in out.stdout and not (data / "nope").exists()


@pytest.mark.parametrize("status", [0, 1, 137])
def test_rootless_exit_status(rootless: Rootless, status: int) -> None:
    script = "kill -9 $$" if status == 137 else f"exit {status}"
    assert rootless.run(str(rootless.image), "sh", "-c", script).returncode == status


def test_rootless_engine_error_and_forbidden_destination(rootless: Rootless) -> None:
    out = rootless.run("--mount", "type=bind,src=/tmp,dst=/etc/x", str(rootless.image), "true")
    assert out.returncode == 122
    assert "destination cannot be a subdirectory of '/etc'" in out.stderr
    out = rootless.run(str(rootless.image), "/no/such/program")
    # the idmap helper execs the program, so the message is its own, with the engine's code
    assert out.returncode == 121 and "/no/such/program" in out.stderr, out.stderr


def test_rootless_env_entrypoint_workdir_init(rootless: Rootless) -> None:
    out = rootless.run("-e", "A=1", "-w", "/made/here", "--entrypoint", "/bin/sh",
                       str(rootless.image), "-c", "echo $A; pwd")
    assert out.stdout.split() == ["1", "/made/here"], out.stderr
    out = rootless.run("--init", "--pid=private", str(rootless.image), "sh", "-c",
                       "tr '\\0' ' ' < /proc/1/cmdline")
    assert out.stdout.startswith("/dev/init -- sh"), out.stderr


def test_rootless_background_leftovers_are_killed(rootless: Rootless) -> None:
    # Without a cgroup runc cannot kill what the first process left behind, and would wait
    # for it forever; the engine kills the container's session once its first process exits.
    out = rootless.run(str(rootless.image), "sh", "-c", "sleep 3703 & echo started",
                       timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "started", out.stderr


def test_rootless_restrictive_umask_and_private_config_json(rootless: Rootless,
                                                            run_site: RunSite) -> None:
    # Issue 13, items 7 and 10: umask 777 breaks nothing, and a hook (running as the caller,
    # who owns the bundle) still reads config.json, which is 0600 as in Sarus; item 4 rootless.
    base = rootless.root / "umask-site"
    base.mkdir(mode=0o755)
    (base / "hooks.d").mkdir(mode=0o755)
    out_dir = base / "out"
    out_dir.mkdir()
    os.chown(out_dir, rootless.uid, rootless.gid)
    probe = base / "probe.py"
    probe.write_text("#!/usr/bin/python3\nimport json, os, sys\n"
                     "path = os.path.join(json.load(sys.stdin)['bundle'], 'config.json')\n"
                     "mode = os.stat(path).st_mode & 0o7777\n"
                     "json.load(open(path))\n"
                     f"open('{out_dir}/mode', 'w').write(oct(mode))\n")
    os.chmod(probe, 0o755)
    hook = base / "hooks.d" / "10-probe.json"
    hook.write_text(json.dumps({"version": "1.0.0", "hook": {"path": str(probe)},
                                "when": {"always": True}, "stages": ["prestart"]}))
    os.chmod(hook, 0o644)
    config = base / "config.yaml"
    config.write_text(run_site.config.read_text().replace(str(run_site.hooks_dir),
                                                          str(base / "hooks.d")))
    os.chmod(config, 0o644)
    site = replace(rootless, env={**rootless.env, "HPC_EXEC_CONFIG": str(config)})
    out = process.run(["runuser", "-u", USER, "--", "sh", "-c", 'umask 777; exec "$0" "$@"',
                       SYSTEM_PYTHON, "-m", "hpc_exec", "run", str(site.image), "/bin/echo",
                       "hi"], timeout=120, env=site.env, cwd=site.root, check=False,
                      desc="hpc-exec run (rootless, umask 777)")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    assert (out_dir / "mode").read_text() == "0o600"
    if os.path.isfile("/etc/resolv.conf"):  # item 4: the image has none; the host's is there
        out = site.run(str(site.image), "cat", "/etc/resolv.conf")
        assert out.returncode == 0, out.stderr
        with open("/etc/resolv.conf") as f:
            assert out.stdout == f.read()
