"""The apptainer-compatible front end in real containers: ``pull --name`` then ``exec`` in the
testbed's busybox and Debian images, the binds, home, workdir and environment apptainer users
expect, the bash-less busybox fallback, errors, concurrent pulls, stock Snakemake
(``--sdm apptainer``) with the front end first on PATH, and one container per task under
``HPC_EXEC_APPTAINER_NTASKS`` inside a Slurm allocation."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

pytestmark = pytest.mark.requires("root", "runc", "squashfs", "registry")

RunSite = Any  # the run_site fixture (tests/integration/run/conftest.py)
NOTE = "hpc-exec: no bash in this image, running the command with /bin/sh"


def frontend_argv() -> list[str]:
    """The ``hpc-exec-apptainer`` script of the environment running the tests, else the module
    run by that environment's interpreter."""
    beside = Path(sys.executable).parent / "hpc-exec-apptainer"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-P", "-m", "hpc_exec.cli.apptainer"]


class Frontend:
    def __init__(self, site: RunSite, workdir: Path) -> None:
        self.site = site
        self.workdir = workdir
        self.env = dict(site.env, HOME=str(workdir), TMPDIR=str(workdir))

    def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 120,
                 **extra_env: str) -> process.Completed:
        env = dict(self.env, **extra_env)
        return process.run([*frontend_argv(), *args], timeout=timeout, check=False, env=env,
                           cwd=cwd or self.workdir, desc="hpc-exec apptainer")

    def pull(self, name: str, ref: str) -> Path:
        out = self("pull", "--name", name, f"docker://{ref}")
        assert out.returncode == 0, out.stderr
        return self.workdir / name


@pytest.fixture
def apptainer(run_site: RunSite, tmp_path: Path) -> Frontend:
    work = tmp_path / "work"
    work.mkdir()
    return Frontend(run_site, work)


@pytest.mark.parametrize(("which", "os_id"), [("small", "busybox"), ("python", "debian")])
def test_pull_then_exec(apptainer: Frontend, run_site: RunSite, which: str,
                        os_id: str) -> None:
    ref = getattr(run_site, which)
    image = apptainer.pull("img.simg", ref)
    data = json.loads(image.read_text())
    assert data["url"] == f"docker://{ref}" and data["pinned"].endswith(data["digest"])
    assert [p.name for p in apptainer.workdir.iterdir()] == ["img.simg"]
    out = apptainer("exec", "img.simg", "cat", "/etc/os-release")
    assert out.returncode == 0, out.stderr
    assert f"ID={os_id}" in out.stdout.splitlines()
    # the same image as docker:// (already cached) and as the squashfs file itself
    out = apptainer("exec", f"docker://{ref}", "grep", "^ID=", "/etc/os-release")
    assert out.stdout == f"ID={os_id}\n", out.stderr
    squashfs = run_site.squashfs_of(ref)
    out = apptainer("exec", str(squashfs), "grep", "^ID=", "/etc/os-release")
    assert out.stdout == f"ID={os_id}\n", out.stderr


def test_bash_command_in_images_with_and_without_bash(apptainer: Frontend,
                                                      run_site: RunSite) -> None:
    cmd = 'set -euo pipefail;  echo "shell=${BASH_VERSION:+bash} arg=$1"; false; echo no'
    apptainer.pull("busybox.simg", run_site.small)
    apptainer.pull("debian.simg", run_site.python)
    out = apptainer("exec", "busybox.simg", "bash", "-c", cmd, "zero", "one")
    assert out.returncode == 1  # set -e held under /bin/sh too
    assert out.stdout == "shell= arg=one\n"
    assert out.stderr.count(NOTE) == 1, out.stderr
    out = apptainer("exec", "debian.simg", "bash", "-c", cmd, "zero", "one")
    assert out.returncode == 1 and out.stdout == "shell=bash arg=one\n"
    assert NOTE not in out.stderr
    out = apptainer("--quiet", "exec", "busybox.simg", "bash", "-c", "echo ok")
    assert out.returncode == 0 and out.stdout == "ok\n" and NOTE not in out.stderr


def test_binds_home_workdir_and_temp_dir(apptainer: Frontend, run_site: RunSite,
                                         tmp_path: Path) -> None:
    apptainer.pull("img.simg", run_site.small)
    work = apptainer.workdir
    data, other, home = tmp_path / "data", tmp_path / "other", tmp_path / "home"
    for d in (data, other, home):
        d.mkdir()
    (data / "in").write_text("hello\n")
    script = ("cat /data/in; touch /data/new 2>/dev/null && echo WROTE || echo REFUSED; "
              f"touch {other}/made; echo HOME=$HOME; touch $HOME/h; pwd; touch here; "
              "touch $TMPDIR/t")
    out = apptainer("exec", "--bind", f"{data}:/data:ro,{other}", "--home", str(home),
                    "img.simg", "sh", "-c", script, TMPDIR=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello", "REFUSED", f"HOME={home}", str(work)]
    assert not (data / "new").exists()
    for made in (other / "made", home / "h", work / "here", tmp_path / "t"):
        assert made.exists(), made
    # the default home is the caller's $HOME, bound; --pwd sets the workdir
    out = apptainer("exec", "-B", str(data), "--pwd", str(data), "img.simg", "sh", "-c",
                    "pwd; echo $HOME; ls $HOME", HOME=str(home))
    assert out.stdout.splitlines() == [str(data), str(home), "h"], out.stderr
    # --contain: neither the cwd nor the home is bound, the workdir is the (empty) home
    out = apptainer("exec", "--contain", "img.simg", "sh", "-c",
                    f"pwd; ls -A $HOME; ls {work} 2>&1 || true", HOME=str(home))
    lines = out.stdout.splitlines()
    assert lines[0] == str(home) and "h" not in lines and "img.simg" not in lines, out.stdout
    # --no-home: the home is not bound, HOME is still set
    out = apptainer("exec", "--no-home", "img.simg", "sh", "-c", "echo $HOME; ls $HOME",
                    HOME=str(home))
    assert out.stdout.splitlines()[0] == str(home) and "h" not in out.stdout.splitlines()


def test_environment_env_and_cleanenv(apptainer: Frontend, run_site: RunSite) -> None:
    apptainer.pull("img.simg", run_site.small)
    show = "echo A=$A B=$B C=$C FOO=$FOO HOME=$HOME; ls / >/dev/null && echo PATH-OK"
    extra = {"FOO": "host", "APPTAINERENV_C": "three"}
    out = apptainer("exec", "--env", "A=1,B=x", "--env", "B=2", "img.simg", "sh", "-c", show,
                    **extra)
    assert out.stdout.splitlines() == [f"A=1 B=2 C=three FOO=host HOME={apptainer.workdir}",
                                       "PATH-OK"], out.stderr
    out = apptainer("exec", "--cleanenv", "img.simg", "sh", "-c", show, **extra)
    assert out.stdout.splitlines() == [f"A= B= C=three FOO= HOME={apptainer.workdir}",
                                       "PATH-OK"], out.stderr
    out = apptainer("exec", "--writable-tmpfs", "img.simg", "sh", "-c",
                    "echo x > /etc/new && cat /etc/new")
    assert out.stdout == "x\n", out.stderr


def test_errors_and_exit_status(apptainer: Frontend, run_site: RunSite) -> None:
    apptainer.pull("img.simg", run_site.small)
    out = apptainer("exec", "--foo", "img.simg", "true")
    assert (out.returncode, out.stdout, out.stderr) == (
        110, "", "hpc-exec apptainer: unsupported option --foo\n")
    out = apptainer("exec", "img.simg", "sh", "-c", "exit 3")
    assert out.returncode == 3
    (apptainer.workdir / "real.sif").write_bytes(
        b"#!/usr/bin/env run-singularity\n\0SIF_MAGIC01" + bytes(64))
    out = apptainer("exec", "real.sif", "true")
    assert out.returncode == 110 and "real SIF files need real apptainer" in out.stderr
    out = apptainer("exec", "missing.simg", "true")
    assert out.returncode == 112 and "image file 'missing.simg' not found" in out.stderr
    out = apptainer("pull", "--name", "x.simg", f"docker://{run_site.small}-nosuchtag")
    assert out.returncode != 0 and not (apptainer.workdir / "x.simg").exists()
    assert out.stderr.count("\n") <= 2 and "hpc-exec apptainer: " in out.stderr


def test_concurrent_pulls_of_one_name(apptainer: Frontend, run_site: RunSite,
                                      tmp_path: Path) -> None:
    """Several jobs pulling the same image to the same NAME into an empty cache: all succeed,
    one image in the cache, one complete descriptor, no temp files."""
    home = tmp_path / "fresh-cache"
    apptainer.env["HPC_EXEC_HOME"] = str(home)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _i: apptainer("pull", "--name", "same.simg",
                                                  f"docker://{run_site.small}",
                                                  timeout=300), range(4)))
    assert [o.returncode for o in outs] == [0] * 4, [o.stderr for o in outs]
    assert [p.name for p in apptainer.workdir.iterdir()] == ["same.simg"]
    assert json.loads((apptainer.workdir / "same.simg").read_text())["url"].endswith(
        run_site.small)
    assert len(list(home.rglob("*.squashfs"))) == 1
    out = apptainer("exec", "same.simg", "true")
    assert out.returncode == 0, out.stderr


@pytest.fixture
def apptainer_on_path(tmp_path: Path) -> Path:
    """A bin dir holding ``apptainer`` that runs this front end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv = frontend_argv()
    if len(argv) == 1:
        (bin_dir / "apptainer").symlink_to(argv[0])
    else:
        (bin_dir / "apptainer").write_text(
            "#!/bin/sh\nexec " + " ".join(argv) + ' "$@"\n')
        (bin_dir / "apptainer").chmod(0o755)
    return bin_dir


def test_stock_snakemake_with_the_front_end_first_on_path(apptainer: Frontend,
                                                          run_site: RunSite,
                                                          apptainer_on_path: Path) -> None:
    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.exists():
        pytest.fail("snakemake (a dependency of hpc-exec) is not installed beside the tests")
    (apptainer.workdir / "Snakefile").write_text(f"""
rule all:
    input: "small.txt", "python.txt", "native.txt"

rule small:
    output: "small.txt"
    container: "docker://{run_site.small}"
    shell: "grep ^ID= /etc/os-release > {{output}}; echo $HOME >> {{output}}"

rule python:
    output: "python.txt"
    container: "docker://{run_site.python}"
    shell: "grep ^ID= /etc/os-release > {{output}}; echo $0 >> {{output}}"

rule native:
    output: "native.txt"
    shell: "test -x {sys.executable} && echo native > {{output}}"
""")
    prefix = ".snakemake/hpc-container/images"
    out = process.run(
        [str(snakemake), "-j2", "--sdm", "apptainer", "--apptainer-prefix", prefix],
        timeout=300, check=False, cwd=apptainer.workdir, desc="snakemake",
        env=dict(apptainer.env, PATH=f"{apptainer_on_path}:{os.environ['PATH']}"))
    assert out.returncode == 0, out.stderr[-3000:]
    work = apptainer.workdir
    assert (work / "small.txt").read_text() == f"ID=busybox\n{work}\n"
    assert (work / "python.txt").read_text() == "ID=debian\nbash\n"
    assert (work / "native.txt").read_text() == "native\n"
    descriptors = list((work / prefix).iterdir())
    assert len(descriptors) == 2
    assert all(json.loads(d.read_text())["format"] == "hpc-exec-apptainer-image"
               for d in descriptors)


@pytest.fixture
def sync_hooks(run_site: RunSite) -> Iterator[tuple[Path, Path]]:
    """The real global-sync hook (the packaged sample, with its base dir in the site's scratch
    dir) plus a hook on the same annotation that appends a line per container.

    Yields (marker file, sync base dir)."""
    from hpc_exec.hooks import fill_sample, sample_values

    marker = run_site.root / "sync-hook-ran"
    base = run_site.root / "sync-base"
    base.mkdir(mode=0o755)
    script = run_site.root / "sync-test-hook.sh"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\necho ran >> {marker}\n")
    os.chmod(script, 0o755)
    import hpc_exec.hooks

    sample = Path(hpc_exec.hooks.__file__).parent / "samples" / "09-slurm-global-sync-hook.json"
    sync = json.loads(fill_sample(sample.read_text(), sample_values(HOOK_BASE_DIR=str(base))))
    sync["hook"]["env"] = [e if not e.startswith("SYNC_TIMEOUT=") else "SYNC_TIMEOUT=60"
                           for e in sync["hook"]["env"]]
    files = {run_site.hooks_dir / "09-slurm-global-sync-hook.json": sync,
             run_site.hooks_dir / "50-sync-test.json": {
                 "version": "1.0.0", "hook": {"path": str(script), "args": ["sync-test"]},
                 "when": {"annotations": {"^com.hooks.slurm-global-sync.enabled$": "^true$"}},
                 "stages": ["prestart"]}}
    for path, data in files.items():
        path.write_text(json.dumps(data))
        os.chmod(path, 0o644)
    try:
        yield marker, base
    finally:
        for path in files:
            path.unlink()
        script.unlink()
        marker.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.requires("slurm")
def test_multi_task_rule_gets_one_container_per_task(apptainer: Frontend, run_site: RunSite,
                                                     sync_hooks: tuple[Path, Path]) -> None:
    marker, base = sync_hooks
    work = apptainer.workdir  # the testbed's nodes share this machine's file systems
    apptainer.pull("img.simg", run_site.small)
    salloc = shutil.which("salloc")
    assert salloc is not None
    out = process.run(
        [salloc, "-N1", "-n3", "--time=5", *frontend_argv(), "exec", "img.simg", "sh", "-c",
         "echo task-$SLURM_PROCID of $SLURM_NTASKS in $(readlink /proc/self/ns/mnt)"],
        timeout=240, check=False, cwd=work, desc="salloc",
        env=dict(apptainer.env, HPC_EXEC_APPTAINER_NTASKS="3"))
    assert out.returncode == 0, out.stderr
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("task-"))
    assert [line.split()[0] for line in lines] == ["task-0", "task-1", "task-2"], out.stdout
    assert len({line.split()[-1] for line in lines}) == 3  # three mount namespaces
    assert marker.read_text() == "ran\n" * 3
    # every rank passed the barrier: its directory was made, and rank 0 removed the step's
    assert [p.name for p in base.glob("*/.oci-hooks/slurm-global-sync")] == \
        ["slurm-global-sync"]
    assert list(base.glob("*/.oci-hooks/slurm-global-sync/*")) == []
    # a failing task fails the step
    out = process.run(
        [salloc, "-N1", "-n2", "--time=5", *frontend_argv(), "exec", "img.simg", "sh", "-c",
         'test "$SLURM_PROCID" = 0'],
        timeout=240, check=False, cwd=work, desc="salloc",
        env=dict(apptainer.env, HPC_EXEC_APPTAINER_NTASKS="2"))
    assert out.returncode != 0
