"""hpc-exec run as root, in real containers: images, identity, mounts, env, entrypoint/cmd/
workdir, init, hooks, exit codes and security checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)


def write_config(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o644)

pytestmark = pytest.mark.requires("root", "runc", "squashfs")


def test_image_os_release_is_seen(run_site: RunSite) -> None:
    out = run_site.run("run", run_site.small, "cat", "/etc/os-release", check=True)
    assert 'ID=busybox' in out.stdout
    out = run_site.run("run", run_site.python, "cat", "/etc/os-release", check=True)
    assert "ID=debian" in out.stdout


def test_identity_matches_the_caller(run_site: RunSite) -> None:
    out = run_site.run("run", run_site.small, "sh", "-c", "id -u; id -g; id -G", check=True)
    uid, gid, groups = out.stdout.split("\n")[:3]
    assert int(uid) == os.getuid() and int(gid) == os.getgid()
    assert {int(g) for g in groups.split()} == {os.getgid(), *os.getgroups()}
    out = run_site.run("run", run_site.small, "grep", "Cap", "/proc/self/status", check=True)
    assert all(line.split()[1] == "0000000000000000" for line in out.stdout.splitlines())
    # the rootfs and bind mounts are nosuid,nodev
    out = run_site.run("run", "--mount", f"type=bind,src={run_site.root},dst=/data",
                       run_site.small, "cat", "/proc/self/mountinfo", check=True)
    for target in ("/", "/data"):
        line = next(ln for ln in out.stdout.splitlines() if ln.split()[4] == target)
        assert {"nosuid", "nodev"} <= set(line.split()[5].split(","))
    # the host's passwd is seen: names resolve
    out = run_site.run("run", run_site.small, "grep", "^slurm:", "/etc/passwd", check=True)
    assert out.stdout.startswith("slurm:")


def test_mounts_readonly_and_writable(run_site: RunSite, tmp_path: Path) -> None:
    data = run_site.root / "data"
    data.mkdir(exist_ok=True)
    (data / "in").write_text("hello\n")
    ro = f"type=bind,src={data},dst=/data,readonly"
    out = run_site.run("run", "--mount", ro, run_site.small, "sh", "-c",
                       "cat /data/in; touch /data/new && echo WROTE || echo REFUSED")
    assert out.returncode == 0 and "hello" in out.stdout and "REFUSED" in out.stdout
    assert not (data / "new").exists()
    rw = f"type=bind,source={data},target=/data"
    out = run_site.run("run", "--mount", rw, run_site.small, "touch", "/data/new")
    assert out.returncode == 0 and (data / "new").exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("type=bind,src=/tmp,dst=/etc/app", "destination cannot be a subdirectory of '/etc'"),
    ("type=bind,src=/tmp,dst=/var", "destination cannot be a subdirectory of '/var'"),
    ("type=bind,src=/tmp,dst=/opt", "destination cannot be '/opt'"),
])
def test_forbidden_destination_refused(run_site: RunSite, spec: str, message: str) -> None:
    out = run_site.run("run", "--mount", spec, run_site.small, "true")
    assert out.returncode == 122, out.stderr
    assert message in out.stderr


def test_bad_mount_and_device_are_invalid_input(run_site: RunSite) -> None:
    out = run_site.run("run", "--mount", "type=bind,src=rel,dst=/x", run_site.small, "true")
    assert out.returncode == 110 and "'rel'" in out.stderr
    out = run_site.run("run", "--device", "/dev/null:rr", run_site.small, "true")
    assert out.returncode == 110 and "repeats a letter" in out.stderr


def test_device_is_usable(run_site: RunSite) -> None:
    out = run_site.run("run", "--device", "/dev/fuse:/dev/myfuse:r", run_site.small,
                       "ls", "-l", "/dev/myfuse", check=True)
    assert out.stdout.startswith("c")


def test_environment_order(run_site: RunSite) -> None:
    cfg = run_site.root / "env-config.yaml"
    write_config(cfg, run_site.config.read_text() + (
        "environment:\n"
        "  set: {SITE_SET: site, FROM_HOST: site-set}\n"
        "  prepend: {PATH: /site/pre}\n"
        "  append: {PATH: /site/post}\n"
        "  unset: [GONE]\n"))
    env = dict(run_site.env, HPC_EXEC_CONFIG=str(cfg), FROM_HOST="host", GONE="x",
               COPY_ME="copied", LANG="host-lang")
    out = run_site.run("run", "-e", "COPY_ME", "-e", "NOT_ON_HOST", "-e", "EMPTY=",
                       "-e", "SITE_SET=user", run_site.python, "env", env=env)
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert got["LANG"] == "C.UTF-8"  # the image beats the host
    assert got["PATH"].startswith("/site/pre:/usr/local/sbin") and \
        got["PATH"].endswith(":/site/post")
    assert got["FROM_HOST"] == "site-set" and "GONE" not in got
    assert got["COPY_ME"] == "copied" and "NOT_ON_HOST" not in got and got["EMPTY"] == ""
    assert got["SITE_SET"] == "user"  # -e has the last word


def test_entrypoint_cmd_workdir(run_site: RunSite) -> None:
    img = run_site.python  # entrypoint none, cmd [python3], workdir /
    out = run_site.run("run", img, "pwd", check=True)
    assert out.stdout.strip() == "/"
    out = run_site.run("run", img, check=True)  # cmd python3 reads an empty stdin
    assert out.returncode == 0
    out = run_site.run("run", "--entrypoint", "/bin/echo", img, "a", "b", check=True)
    assert out.stdout.strip() == "a b"
    out = run_site.run("run", "--entrypoint", "/bin/echo", img, check=True)
    assert out.stdout.strip() == ""  # --entrypoint drops the image's cmd
    out = run_site.run("run", "--entrypoint", "", img, "echo", "x", check=True)
    assert out.stdout.strip() == "x"
    out = run_site.run("run", "-w", "/new/work/dir", img, "pwd", check=True)
    assert out.stdout.strip() == "/new/work/dir"


def test_init_is_pid1_with_private_pid(run_site: RunSite) -> None:
    out = run_site.run("run", "--init", "--pid=private", run_site.small, "sh", "-c",
                       "tr '\\0' ' ' < /proc/1/cmdline; echo; /dev/init --version; echo $$",
                       check=True)
    cmdline, version, pid = out.stdout.splitlines()[:3]
    assert cmdline.startswith("/dev/init -- sh")
    assert "tini version" in version
    assert int(pid) != 1  # the shell is tini's child
    out = run_site.run("run", "--pid=private", run_site.small, "sh", "-c", "echo $$",
                       check=True)
    assert out.stdout.strip() == "1"


def test_hook_selected_by_annotation(run_site: RunSite, hook_markers: Path) -> None:
    out = run_site.run("run", "--annotation", "com.test.hook=yes", run_site.small, "true")
    assert out.returncode == 0, out.stderr
    assert hook_markers.read_text().split() == ["10-selected"]
    hook_markers.unlink()
    out = run_site.run("hooks", check=True)
    assert "10-selected" in out.stdout and "prestart" in out.stdout
    out = run_site.run("run", run_site.small, "true", check=True)
    assert not hook_markers.exists()


@pytest.mark.parametrize("status", [0, 1, 3, 137])
def test_exit_status_passes_through(run_site: RunSite, status: int) -> None:
    script = "kill -9 $$" if status == 137 else f"echo err >&2; exit {status}"
    out = run_site.run("run", run_site.small, "sh", "-c", script)
    assert out.returncode == status
    if status not in (0, 137):
        assert out.stderr.strip() == "err"  # the container's stderr is not swallowed


def test_engine_errors_have_their_own_codes(run_site: RunSite) -> None:
    out = run_site.run("run", "127.0.0.1:1/no/such:image", "true")
    assert out.returncode == 112, out.stderr
    out = run_site.run("run", run_site.small, "/no/such/program")
    assert out.returncode == 121 and "runc failed" in out.stderr


def test_security_check_names_the_file(run_site: RunSite) -> None:
    bad = run_site.hooks_dir / "50-writable.json"
    bad.write_text('{"version": "1.0.0", "hook": {"path": "/bin/true"}, '
                   '"when": {"always": false}, "stages": ["prestart"]}')
    try:
        os.chmod(bad, 0o666)
        out = run_site.run("run", run_site.small, "true")
        assert out.returncode == 122
        assert f"{bad} is writable by group or others" in out.stderr
        bad.write_text("{broken")
        os.chmod(bad, 0o644)
        out = run_site.run("run", run_site.small, "true")
        assert out.returncode == 111 and f"hook file {bad}: not valid JSON" in out.stderr
    finally:
        bad.unlink()


def test_python_api(run_site: RunSite, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_exec import engine
    from hpc_exec.errors import InvalidInput, RuntimeFailure

    for key in ("HPC_EXEC_CONFIG", "HPC_EXEC_HOME"):
        monkeypatch.setenv(key, run_site.env[key])
    import hpc_exec.config

    hpc_exec.config._cached.cache_clear()
    data = run_site.root / "api-data"
    data.mkdir(exist_ok=True)
    mnt_ns = os.readlink("/proc/self/ns/mnt")
    status = engine.run(run_site.small, ["sh", "-c", "echo $GREETING > /data/out; exit 3"],
                        binds=[f"{data}:/data"], env={"GREETING": "hi"})
    assert status == 3 and (data / "out").read_text() == "hi\n"
    assert os.readlink("/proc/self/ns/mnt") == mnt_ns  # the caller stayed where it was
    with pytest.raises(InvalidInput, match="'/etc/x:y:z'"):
        engine.run(run_site.small, ["true"], binds=["/etc/x:y:z"])
    with pytest.raises(RuntimeFailure, match="runc failed"):
        engine.run(run_site.small, ["/no/such/program"])
    hpc_exec.config._cached.cache_clear()


def test_config_init_writes_a_site_that_runs_its_hooks(run_site: RunSite) -> None:
    # hpc-exec config init fills the packaged samples with this installation's paths; the
    # result passes the security checks and its timestamp hook runs in a real container.
    dest = run_site.root / "config-init"
    out = run_site.run("config", "init", "--dest", str(dest), "--hook-base-dir",
                       str(run_site.root / "hook-base"), check=True)
    assert f"wrote {dest}/hooks.d/00-timestamp-hook.json" in out.stdout
    assert "left out 07-mount-hook-ofi-provider.json: no value for OFI_PROVIDER" in out.stdout
    if not os.path.exists("/dev/kfd"):
        assert "left out 03-amdgpu-hook.json: no /dev/kfd on this host" in out.stdout
    config = dest / "config.yaml"
    # the site's own setting for the testbed registry, as an admin would add it
    with open(config, "a") as f:
        f.write(run_site.config.read_text().splitlines()[0] + "\n")
    env = {**run_site.env, "HPC_EXEC_CONFIG": str(config)}
    listed = run_site.run("hooks", env=env, check=True).stdout
    assert "09-slurm-global-sync-hook" in listed and "05-mpi-hook" in listed
    log = run_site.root / "config-init.log"
    done = run_site.run("run", "--annotation", "com.hooks.timestamp.enabled=true", "-e",
                        f"TIMESTAMP_HOOK_LOGFILE={log}", run_site.small, "true", env=env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().endswith("Timestamp hook: After-runtime\n")
    again = run_site.run("config", "init", "--dest", str(dest), check=True)
    assert f"kept {config} (exists; --force replaces it)" in again.stdout
