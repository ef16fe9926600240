"""Project rules that a linter would enforce, checked on the source tree.

One way to run a subprocess (shared/STYLE.md habit 5): only hpc_exec/process.py for the CLI,
engine and front ends, and hooks/_state.py for the hooks, which are standard-library programs
that must not import hpc_exec outside hpc_exec.hooks (and the standard-library-only
hpc_exec.mountspec).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"hpc_exec/process.py", "hooks/_state.py"}
IMPORT = re.compile(r"^\s*(import subprocess\b|from subprocess import)", re.MULTILINE)


def test_subprocess_is_imported_only_by_the_two_wrappers() -> None:
    offenders = []
    for folder in ("hpc_exec", "engine", "hooks", "snakemake_executor_plugin_hpc_container"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel not in ALLOWED and IMPORT.search(path.read_text()):
                offenders.append(rel)
    assert offenders == []


def test_hooks_import_nothing_of_hpc_exec_but_hooks() -> None:
    """Hooks are standard-library programs: of hpc_exec they use only hpc_exec.hooks and the
    shared --mount/--device grammar (hpc_exec.mountspec, itself standard library only)."""
    pattern = re.compile(r"^\s*(?:from|import) hpc_exec(?!\.hooks\b|\.mountspec\b| import "
                         r"mountspec\b)", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "hooks").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []
