"""The wheel ships exactly two top-level packages and the rootless idmap helper, a plain
``pip install`` gives a working rootless container, and Snakemake finds the executor plugin."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from .conftest import SYSTEM_PYTHON, hpc_exec_exe

ROOT = Path(__file__).resolve().parents[2]


def _source_packages() -> set[str]:
    """Every package in the source tree, under the name it is installed as."""
    roots = {"hpc_exec": "hpc_exec", "engine": "hpc_exec.engine", "hooks": "hpc_exec.hooks",
             "snakemake_executor_plugin_hpc_container": "snakemake_executor_plugin_hpc_container"}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    return found


def test_wheel_top_level_names_and_packages(shared_tmp: Path) -> None:
    process.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                 str(shared_tmp), str(ROOT)], timeout=600, desc="building the wheel")
    wheel = next(shared_tmp.glob("hpc_exec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"hpc_exec", "snakemake_executor_plugin_hpc_container"}
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names
                if n.endswith("/__init__.py")}
    assert packages == _source_packages()
    # package data: the samples `hpc-exec config init` fills, the rootless helper's source
    samples = {Path(n).name for n in names if n.startswith("hpc_exec/hooks/samples/")}
    assert samples == {p.name for p in (ROOT / "hooks" / "samples").glob("*.json")}
    assert "hpc_exec/engine/runtime/idmap.c" in names
    # the helper itself, compiled by the build (setup.py, build_idmap), executable
    helper = zipfile.ZipFile(wheel).getinfo("hpc_exec/engine/runtime/hpc-exec-idmap")
    assert (helper.external_attr >> 16) & 0o111 == 0o111
    assert wheel.name.endswith(("-py3-none-linux_x86_64.whl", "-py3-none-linux_aarch64.whl"))
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hpc-exec = hpc_exec.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.parametrize("case", ["no compiler", "no static libc"])
def test_a_build_without_what_the_helper_needs_fails_in_one_line(shared_tmp: Path,
                                                                 case: str) -> None:
    """The package build compiles the idmap helper; without a C compiler, or with one that
    cannot link statically, it fails with one line saying what is missing (issue 12, 15)."""
    env = dict(os.environ)
    if case == "no compiler":
        env.pop("CC", None)
        env["PATH"] = str(shared_tmp / "empty")  # pip's build runs sys.executable directly
        (shared_tmp / "empty").mkdir()
        expected = ("error: hpc-exec: building hpc-exec-idmap needs a C compiler: none of cc, "
                    "gcc, clang is on PATH")
    else:
        fake = shared_tmp / "cc"
        fake.write_text("#!/bin/sh\necho '/usr/bin/ld: cannot find -lc: No such file or "
                        "directory' >&2\necho 'collect2: error: ld returned 1 exit status' >&2\n"
                        "exit 1\n")
        fake.chmod(0o755)
        env["CC"] = str(fake)
        expected = "/usr/bin/ld: cannot find -lc: No such file or directory (it needs a C compiler"
    out = process.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                       str(shared_tmp / "wheel"), str(ROOT)], env=env, timeout=600, check=False,
                      desc="building the wheel")
    assert out.returncode != 0
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines()
             if "hpc-exec-idmap" in line]
    assert len(lines) == 1 and lines[0].startswith("error: hpc-exec: building hpc-exec-idmap")
    assert expected in lines[0], lines[0]
    assert not list((shared_tmp / "wheel").glob("*.whl"))


def test_console_script() -> None:
    out = process.run([hpc_exec_exe(), "--version"], timeout=60, desc="hpc-exec --version")
    assert out.stdout.startswith("hpc-exec ")


def test_snakemake_lists_the_executor() -> None:
    snakemake = str(Path(sys.executable).parent / "snakemake")
    out = process.run([snakemake, "--help"], timeout=300, desc="snakemake --help")
    assert "hpc-container" in out.stdout.split("--executor", 1)[1].split("]", 1)[0]


def test_plugin_import_is_light() -> None:
    code = ("import sys, snakemake_executor_plugin_hpc_container as p; "
            "heavy = [m for m in ('parsl', 'hpc_exec.engine', 'hpc_exec.testbed', 'yaml') "
            "if m in sys.modules]; print(heavy)")
    out = process.run([sys.executable, "-c", code], timeout=120, desc="importing the plugin",
                      cwd="/")
    assert out.stdout.strip() == "[]"


@pytest.mark.requires("root", "runc", "squashfs", "fuse", "userfuse", "userns", "system-python")
def test_a_plain_pip_install_runs_rootless_as_the_caller(shared_tmp: Path, testbed: Any,
                                                        test_user: pwd.struct_passwd) -> None:
    """Issue 12, item 15: ``pip install`` of the project into a fresh venv (what Snakemake and
    Parsl users do) has the idmap helper, so a rootless container runs as the caller's uid,
    with no warning. Offline: the wheel is built as above, installed with ``--no-index
    --no-deps``; the two runtime dependencies the CLI imports are copied from the test
    environment (pip has no index to fetch them from here)."""
    import filelock
    import yaml

    process.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                 str(shared_tmp / "wheel"), str(ROOT)], timeout=600, desc="building the wheel")
    wheel = next((shared_tmp / "wheel").glob("hpc_exec-*.whl"))
    venv = shared_tmp / "venv"
    process.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], timeout=300, desc="a fresh venv")
    process.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps",
                 str(wheel)], timeout=300, desc="pip install of the wheel")
    site = next(venv.glob("lib/python3*/site-packages"))
    for module in (filelock, yaml):
        shutil.copytree(Path(module.__file__).parent, site / module.__name__,  # type: ignore
                        ignore=shutil.ignore_patterns("__pycache__"))
    if (Path(yaml.__file__).parents[1] / "_yaml").is_dir():  # type: ignore[arg-type]
        shutil.copytree(Path(yaml.__file__).parents[1] / "_yaml", site / "_yaml")  # type: ignore
    assert (site / "hpc_exec" / "engine" / "runtime" / "hpc-exec-idmap").is_file()
    # the user's own venv: the helper may be theirs (it runs only as them)
    for path in [venv, *venv.rglob("*")]:
        os.lchown(path, test_user.pw_uid, test_user.pw_gid)
    home = shared_tmp / "home"
    home.mkdir()
    os.chown(home, test_user.pw_uid, test_user.pw_gid)
    config = shared_tmp / "config.yaml"
    config.write_text(f'insecureRegistries: ["{testbed.registry}"]\n')
    os.chmod(config, 0o644)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "HPC_EXEC_HOME": str(home), "HPC_EXEC_CONFIG": str(config)}

    def as_user(*args: str) -> process.Completed:
        return process.run(["runuser", "-u", test_user.pw_name, "--",
                            str(venv / "bin" / "hpc-exec"), *args], env=env, cwd="/",
                           timeout=300, check=False, desc="hpc-exec " + args[0])

    out = as_user("pull", testbed.image_small)
    assert out.returncode == 0, out.stderr
    out = as_user("run", testbed.image_small, "id", "-u")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(test_user.pw_uid)], out.stdout
    assert "warning" not in out.stderr and "uid 0" not in out.stderr, out.stderr
