"""The wheel ships exactly two top-level packages and Snakemake finds the executor plugin."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from hpc_exec import process

from .conftest import hpc_exec_exe

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
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hpc-exec = hpc_exec.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


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
