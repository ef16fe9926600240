"""Floors you can see (shared/STYLE.md habit 18), checked on every import statement in the
source tree, those inside functions included:

* the base (errors, process, config, files, mountspec) imports nothing above it;
* the engine imports neither the CLI, the front ends, the testbed, nor a private hook module;
* the CLI and the front ends use the engine only through its API modules.

The testbed is development tooling, not a road to runc: it builds and pushes test images with
the engine's registry client, so it is exempt from the third rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = ["hpc_exec/errors.py", "hpc_exec/process.py", "hpc_exec/config.py", "hpc_exec/files.py",
        "hpc_exec/mountspec.py"]
ABOVE_BASE = ("hpc_exec.engine", "hpc_exec.cli", "hpc_exec.hooks", "hpc_exec.testbed",
              "hpc_exec.snakemake", "hpc_exec.parsl", "hpc_exec.slurm")
FRONT_ENDS = ["hpc_exec/cli", "hpc_exec/snakemake", "hpc_exec/parsl", "hpc_exec/slurm",
              "snakemake_executor_plugin_hpc_container"]
ENGINE_API = {"hpc_exec.engine", "hpc_exec.engine.api", "hpc_exec.engine.runtime.api"}


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (``from hpc_exec.engine import api`` gives
    ``hpc_exec.engine.api`` when ``api`` is a module, else ``hpc_exec.engine``)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                folder = ROOT / candidate.replace("hpc_exec.engine", "engine", 1).replace(
                    "hpc_exec.hooks", "hooks", 1).replace(".", "/")
                yield candidate if folder.with_suffix(".py").exists() or \
                    (folder / "__init__.py").exists() else node.module


def _files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        p = ROOT / folder
        yield from ([p] if p.is_file() else sorted(p.rglob("*.py")))


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_base_imports_nothing_above_it() -> None:
    bad = [(str(f.relative_to(ROOT)), m) for f in _files(*BASE) for m in _imports(f)
           if _under(m, ABOVE_BASE)]
    assert bad == []


def test_the_engine_stays_below_the_cli_and_the_front_ends() -> None:
    above = ("hpc_exec.cli", "hpc_exec.testbed", "hpc_exec.snakemake", "hpc_exec.parsl",
             "hpc_exec.slurm")
    bad = [(str(f.relative_to(ROOT)), m) for f in _files("engine") for m in _imports(f)
           if _under(m, above) or m.startswith("hpc_exec.hooks._")]
    assert bad == []


def test_cli_and_front_ends_use_only_the_engine_api() -> None:
    bad = [(str(f.relative_to(ROOT)), m) for f in _files(*FRONT_ENDS) for m in _imports(f)
           if _under(m, ("hpc_exec.engine",)) and m not in ENGINE_API]
    assert bad == []


def test_the_checker_sees_imports_inside_functions() -> None:
    """The rules above would pass vacuously if _imports missed nested or aliased imports."""
    found = set(_imports(ROOT / "hpc_exec/cli/run.py"))
    assert "hpc_exec.engine.runtime.api" in found
    assert "hpc_exec.engine.api" in set(_imports(ROOT / "hpc_exec/cli/images.py"))
