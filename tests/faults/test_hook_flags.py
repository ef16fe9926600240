"""Flags that would silently do nothing (issue 12, item 14): ``--sync``, ``--mpi``,
``--glibc`` and ``--ssh`` fail with one line naming the hooks dir when no hook answers them."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytestmark = pytest.mark.requires("root", "runc", "squashfs")

SMALL = "testbed/busybox:latest"
KEYS = {"--sync": "com.hooks.slurm-global-sync.enabled", "--mpi": "com.hooks.mpi.enabled",
        "--glibc": "com.hooks.glibc.enabled", "--ssh": "com.hooks.ssh.enabled"}


@pytest.mark.parametrize("flag", ["--sync", "--mpi", "--glibc", "--ssh"])
def test_a_flag_no_hook_answers_is_an_error_naming_the_hooks_dir(fsite: Any, flag: str) -> None:
    hooks = fsite.root / "hooks.d"
    hooks.mkdir(mode=0o755)
    config = fsite.write_config(fsite.config.read_text() + f"hooksDir: {hooks}\n", "h.yaml")
    home = fsite.root / "home"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home, config=config).returncode == 0
    out = fsite.hx("run", flag, ref, "true", home=home, config=config)
    assert out.returncode == 111, out.stderr
    errors = out.stderr.strip().splitlines()
    key = KEYS[flag]
    assert errors[0] == f"hpc-exec: error: {flag}: no hook in {hooks} answers it ({key})", \
        out.stderr
    assert len(errors) == 2 and "hpc-exec config init" in errors[1]


def test_the_testbed_site_answers_sync(fsite: Any, testbed: Any) -> None:
    """The testbed's own site config names the standard hooks.d: --sync is answered (one task
    outside Slurm: the barrier hook does not apply and says so by exiting 0)."""
    home = fsite.root / "home"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    config = testbed.env["HPC_EXEC_CONFIG"]
    assert os.path.isdir(os.path.join(os.path.dirname(config), "hooks.d"))
    out = fsite.hx("run", "--sync", ref, "true", home=home, config=config)
    assert out.returncode == 0, out.stderr
