"""Fixtures for the run side: a site (config, hooks.d, repository) with both testbed images.

``run_site`` (session) makes a root-owned scratch dir under /var/tmp that every user and
testbed node can read, writes a site config (securityChecks on, its own hooksDir) and pulls the
testbed's busybox and Debian+python3 images into a fresh local repository with the real
``hpc-exec pull``. Tests call the installed ``hpc-exec`` with ``site.env``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpc_exec import process

from ..conftest import idmap_helper



def hpc_exec_exe() -> str:
    """The ``hpc-exec`` script of the environment running the tests (not a pyenv shim)."""
    import sys

    beside = Path(sys.executable).parent / "hpc-exec"
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


@dataclass
class RunSite:
    root: Path
    config: Path
    hooks_dir: Path
    env: dict[str, str]
    small: str  # image references
    python: str

    def run(self, *args: str, timeout: float = 120, check: bool = False,
            env: dict[str, str] | None = None) -> process.Completed:
        return process.run([hpc_exec_exe(), *args], timeout=timeout, check=check,
                           env=env or self.env, desc="hpc-exec " + (args[0] if args else ""))

    def squashfs_of(self, ref: str) -> Path:
        from hpc_exec.engine import lookup

        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Path(lookup(ref).squashfs)
        finally:
            os.environ.clear()
            os.environ.update(old)


def write_config(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o644)


@pytest.fixture(scope="session")
def run_site(testbed: object) -> Iterator[RunSite]:
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-run-test-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    hooks_dir = root / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    config = root / "config.yaml"
    write_config(config, f"insecureRegistries: [\"{testbed.registry}\"]\n"  # type: ignore
                 f"hooksDir: {hooks_dir}\ntempDir: {root}\n"
                 f"idmapHelper: {idmap_helper(root)}\n")
    env = testbed.environ(HPC_EXEC_CONFIG=str(config),  # type: ignore[attr-defined]
                          HPC_EXEC_HOME=str(root / "home"))
    site = RunSite(root, config, hooks_dir, env, testbed.image_small,  # type: ignore
                   testbed.image_python)  # type: ignore[attr-defined]
    try:
        for ref in (site.small, site.python):
            site.run("pull", ref, timeout=600, check=True)
        yield site
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hook_markers(run_site: RunSite) -> Iterator[Path]:
    """Two hooks: 'selected' needs com.test.hook=yes, 'other' needs com.test.other=yes.

    Each appends its name to the returned marker file. The hook files are removed afterwards.
    """
    marker = run_site.root / "hook-ran"
    script = run_site.root / "test-hook.sh"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\necho \"$1\" >> {marker}\n")
    os.chmod(script, 0o755)
    files = []
    for name, key in (("10-selected", "com.test.hook"), ("20-other", "com.test.other")):
        f = run_site.hooks_dir / f"{name}.json"
        f.write_text(json.dumps({"version": "1.0.0",
                                 "hook": {"path": str(script), "args": ["test-hook", name]},
                                 "when": {"annotations": {f"^{key}$": "^yes$"}},
                                 "stages": ["prestart"]}))
        os.chmod(f, 0o644)
        files.append(f)
    try:
        yield marker
    finally:
        for f in files:
            f.unlink()
        marker.unlink(missing_ok=True)
