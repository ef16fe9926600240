"""Issue 13, items 1-10: what a Sarus user relies on at run time, in real containers as root
(the rootless side is in test_run_rootless.py; the pure rules in
tests/unit/test_runtime_sarus_parity.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from .conftest import hpc_exec_exe, write_config

pytestmark = pytest.mark.requires("root", "runc", "squashfs")

RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)

# what a CUDA base image sets, plus PMIx variables that must not beat the host's
IMAGE_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES=all",
             "CUDA_VERSION=12.2.0", "PMIX_SERVER_TMPDIR=/from/image", "PMIX_IMAGE_ONLY=x"]
GPU_VARIABLES = ("CUDA_VERSION", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES")

# A hook that reports what it saw: the annotations, the mode of the bundle's config.json and
# the device cgroup rules in it. It runs as root, as Sarus hooks do.
PROBE = """#!/usr/bin/python3
import json, os, sys
state = json.load(sys.stdin)
path = os.path.join(state["bundle"], "config.json")
with open(path) as f:
    config = json.load(f)
report = {"annotations": state.get("annotations", {}), "mode": os.stat(path).st_mode & 0o7777,
          "devices": config["linux"].get("resources", {}).get("devices", []),
          "namespaces": [n["type"] for n in config["linux"]["namespaces"]]}
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""


def _env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Site:
    """A site of its own: config (with ``extra`` keys), hooks.d with the probe hook."""

    def __init__(self, run_site: RunSite, root: Path, extra: str = "") -> None:
        self.run_site = run_site
        self.report = root / "probe.json"
        hooks = root / "hooks.d"
        hooks.mkdir(mode=0o755, exist_ok=True)
        probe = root / "probe.py"
        probe.write_text(PROBE)
        os.chmod(probe, 0o755)
        # selected on every run (the engine always sets com.hooks.logging.level), and it
        # answers --mpi and --ssh, which must find a hook
        hook = hooks / "10-probe.json"
        hook.write_text(json.dumps({
            "version": "1.0.0", "hook": {"path": str(probe), "args": ["probe", str(self.report)]},
            "when": {"annotations": {r"^com\.hooks\..*$": ".*"}}, "stages": ["prestart"]}))
        os.chmod(hook, 0o644)
        self.config = root / "config.yaml"
        base = run_site.config.read_text().replace(str(run_site.hooks_dir), str(hooks))
        write_config(self.config, base + extra)
        self.env = {**run_site.env, "HPC_EXEC_CONFIG": str(self.config)}

    def run(self, *args: str, env: dict[str, str] | None = None) -> process.Completed:
        self.report.unlink(missing_ok=True)
        return self.run_site.run(*args, env={**self.env, **(env or {})})

    def probe(self) -> dict[str, Any]:
        return json.loads(self.report.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def parity(run_site: RunSite) -> Iterator[Path]:
    """A scratch dir holding a busybox squashfs whose metadata sets GPU and PMIx variables."""
    root = run_site.root / "parity"
    root.mkdir(mode=0o755)
    squashfs = run_site.squashfs_of(run_site.small)
    shutil.copyfile(squashfs, root / "cuda.sqfs")
    meta = json.loads(squashfs.with_suffix(".json").read_text())
    meta["env"] = IMAGE_ENV
    (root / "cuda.json").write_text(json.dumps(meta))
    for path in root.iterdir():
        os.chmod(path, 0o644)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def site(run_site: RunSite, tmp_path: Path) -> Site:
    os.chmod(tmp_path, 0o755)
    return Site(run_site, tmp_path)


# -- item 1: GPU variables -----------------------------------------------------------------------

def test_host_gpu_allocation_wins_over_the_image(run_site: RunSite, parity: Path) -> None:
    image = str(parity / "cuda.sqfs")
    out = run_site.run("run", image, "env", env={**run_site.env, "CUDA_VISIBLE_DEVICES": "3,1,5"})
    assert out.returncode == 0, out.stderr
    env = _env_lines(out.stdout)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "3,1,5"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0,2"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "all"  # the image has none
    for host in ({}, {"CUDA_VISIBLE_DEVICES": "NoDevFiles"}):
        out = run_site.run("run", image, "env", env={**run_site.env, **host})
        assert out.returncode == 0, out.stderr
        env = _env_lines(out.stdout)
        assert not set(GPU_VARIABLES) & set(env), env  # no GPU granted: the image's go


# -- item 2: PMIx ------------------------------------------------------------------------------

def test_image_pmix_variables_do_not_beat_the_host(run_site: RunSite, parity: Path) -> None:
    out = run_site.run("run", str(parity / "cuda.sqfs"), "env",
                       env={**run_site.env, "PMIX_SERVER_TMPDIR": "/from/host"})
    assert out.returncode == 0, out.stderr
    env = _env_lines(out.stdout)
    assert env["PMIX_SERVER_TMPDIR"] == "/from/host"
    assert "PMIX_IMAGE_ONLY" not in env


# -- item 3: --init reaps zombies in the host PID namespace ----------------------------------------

def test_init_reaps_orphans_in_the_host_pid_namespace(run_site: RunSite) -> None:
    # The subshell exits at once, orphaning its sleep: the sleep must be re-parented to tini
    # (the shell's parent), not to runc outside the container, and reaped by it when it ends.
    script = ("(sleep 1 & echo $! > /tmp/orphan); o=$(cat /tmp/orphan); sleep 0.3; "
              "echo init $PPID; grep PPid /proc/$o/status; "
              "i=0; while [ -e /proc/$o ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
              "if [ -e /proc/$o ]; then grep State /proc/$o/status; else echo reaped; fi")
    out = run_site.run("run", "--init", run_site.small, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    init = lines[0].split()[1]
    assert lines[1].split() == ["PPid:", init], out.stdout
    assert lines[2] == "reaped", out.stdout
    assert "Tini is not running as PID 1" not in out.stderr


# -- item 4: /etc/resolv.conf ----------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isfile("/etc/resolv.conf"), reason="no /etc/resolv.conf here")
def test_image_without_resolv_conf_gets_the_hosts(run_site: RunSite) -> None:
    # the testbed's busybox image has no /etc/resolv.conf (the test below shows it)
    out = run_site.run("run", run_site.small, "cat", "/etc/resolv.conf")
    assert out.returncode == 0, out.stderr
    with open("/etc/resolv.conf") as f:
        assert out.stdout == f.read()


def test_busybox_image_has_no_resolv_conf(run_site: RunSite) -> None:
    from hpc_exec.engine import lookup

    old = dict(os.environ)
    os.environ.update(run_site.env)
    try:
        squashfs = lookup(run_site.small).squashfs
    finally:
        os.environ.clear()
        os.environ.update(old)
    listing = process.run(["unsquashfs", "-l", str(squashfs)], timeout=60,
                          desc="listing the image").stdout
    assert "/etc/os-release" in listing and "/etc/resolv.conf" not in listing


# -- item 5: --mpi enables glibc; --ssh means a private PID namespace -------------------------------

def test_mpi_sets_the_glibc_annotation(site: Site) -> None:
    out = site.run("run", "--mpi", site.run_site.small, "true")
    assert out.returncode == 0, out.stderr
    ann = site.probe()["annotations"]
    assert ann["com.hooks.mpi.enabled"] == "true" and ann["com.hooks.glibc.enabled"] == "true"


def test_ssh_implies_a_private_pid_namespace(site: Site) -> None:
    out = site.run("run", "--ssh", site.run_site.small, "sh", "-c", "echo $$")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    assert "pid" in site.probe()["namespaces"]


def test_ssh_with_host_pid_is_refused(site: Site) -> None:
    out = site.run("run", "--ssh", "--pid=host", site.run_site.small, "true")
    assert out.returncode == 110
    assert out.stderr.splitlines()[0] == (
        "hpc-exec: error: --ssh cannot be used with --pid=host: the SSH hook needs a private "
        "PID namespace (--ssh implies --pid=private)")
    assert not site.report.exists()


# -- item 6: site devices cannot be widened -------------------------------------------------------

def _rules(report: dict[str, Any]) -> list[tuple[bool, int | None, str]]:
    return [(r["allow"], r.get("minor"), r["access"]) for r in report["devices"]]


def test_user_device_cannot_widen_a_site_device(run_site: RunSite, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    site = Site(run_site, tmp_path, extra="siteDevices: ['/dev/zero:/dev/site0:r']\n")
    for access in ("rw", "rwm", "m"):
        out = site.run("run", "--device", f"/dev/zero:/dev/mine:{access}", run_site.small, "true")
        assert out.returncode == 122, out.stderr
        assert out.stderr.splitlines()[0].startswith(
            f"hpc-exec: error: --device /dev/zero: access '{access}' is wider than the 'r' the "
            "site grants that device (siteDevices)")
    out = site.run("run", "--device", "/dev/zero", run_site.small, "true")  # rwm by default
    assert out.returncode == 122 and "ask for 'r' or less" in out.stderr
    out = site.run("run", "--device", "/dev/zero:/dev/mine:r", run_site.small, "true")
    assert out.returncode == 0, out.stderr
    assert _rules(site.probe()) == [(False, None, "rwm"), (True, 5, "r"), (True, 5, "r")]


def test_user_device_narrows_a_site_device(run_site: RunSite, tmp_path: Path) -> None:
    # config.json's rules are what counts: runc always allows /dev/zero itself (its default
    # devices), and this machine's device cgroup does not enforce anything either
    os.chmod(tmp_path, 0o755)
    site = Site(run_site, tmp_path, extra="siteDevices: ['/dev/zero:/dev/site0:rw']\n")
    out = site.run("run", run_site.small, "ls", "/dev/site0")
    assert out.returncode == 0, out.stderr
    assert _rules(site.probe()) == [(False, None, "rwm"), (True, 5, "rw")]
    out = site.run("run", "--device", "/dev/zero:/dev/mine:r", run_site.small,
                   "ls", "/dev/site0", "/dev/mine")
    assert out.returncode == 0, out.stderr
    assert _rules(site.probe()) == [(False, None, "rwm"), (True, 5, "r"), (True, 5, "r")]


# -- item 7: a restrictive umask does not break runs -------------------------------------------------

@pytest.mark.parametrize("umask", ["777", "077"])
def test_restrictive_umask(run_site: RunSite, umask: str) -> None:
    out = process.run(["sh", "-c", f'umask {umask}; exec "$0" "$@"', hpc_exec_exe(), "run",
                       run_site.small, "/bin/echo", "hi"], timeout=120, check=False,
                      env=run_site.env, desc="hpc-exec run under a umask")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    out = process.run(["sh", "-c", f'umask {umask}; exec "$0" "$@"', hpc_exec_exe(), "run",
                       "--mount", f"type=bind,src={run_site.root},dst=/new/deep/data",
                       run_site.small, "sh", "-c", "id -un; ls -d /new/deep/data; umask"],
                      timeout=120, check=False, env=run_site.env, desc="hpc-exec run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["root", "/new/deep/data", "0022"]


# -- item 8: Python's locale coercion does not leak --------------------------------------------------

def _no_locale_env(run_site: RunSite) -> dict[str, str]:
    return {k: v for k, v in run_site.env.items()
            if not k.startswith(("LC_", "LANG", "PYTHONCOERCECLOCALE", "PYTHONUTF8"))}


def test_coerced_locale_does_not_reach_the_container(run_site: RunSite) -> None:
    env = _no_locale_env(run_site)
    out = run_site.run("run", run_site.small, "env", env=env)
    assert out.returncode == 0, out.stderr
    assert "LC_CTYPE" not in _env_lines(out.stdout)
    out = run_site.run("run", run_site.small, "env", env={**env, "LC_CTYPE": "C"})
    assert _env_lines(out.stdout)["LC_CTYPE"] == "C"  # the host's own value, not C.UTF-8
    out = run_site.run("run", run_site.small, "env", env={**env, "LC_CTYPE": "C.UTF-8"})
    assert _env_lines(out.stdout)["LC_CTYPE"] == "C.UTF-8"  # a real setting stays


def test_coerced_locale_does_not_reach_the_container_through_the_api(run_site: RunSite) -> None:
    code = ("import sys; from hpc_exec import engine; "
            "r = engine.run(sys.argv[1], ['env'], capture=True); "
            "sys.stdout.write(r.stdout); sys.exit(r.returncode)")
    out = process.run([sys.executable, "-P", "-c", code, run_site.small], timeout=120,
                      check=False, env=_no_locale_env(run_site), cwd="/", desc="engine.run")
    assert out.returncode == 0, out.stderr
    env = _env_lines(out.stdout)
    assert "PATH" in env and "LC_CTYPE" not in env


# -- items 9 and 10: the hooks' log level; config.json 0600 ------------------------------------------

def test_logging_level_annotation_is_sarus_number(site: Site) -> None:
    out = site.run("--debug", "run", site.run_site.small, "true")
    assert out.returncode == 0, out.stderr
    assert site.probe()["annotations"]["com.hooks.logging.level"] == "0"
    out = site.run("run", site.run_site.small, "true")
    assert out.returncode == 0, out.stderr
    assert site.probe()["annotations"]["com.hooks.logging.level"] == "2"


def test_config_json_is_0600_and_hooks_read_it(site: Site) -> None:
    out = site.run("run", site.run_site.small, "true")
    assert out.returncode == 0, out.stderr
    assert site.probe()["mode"] == 0o600
