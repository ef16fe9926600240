"""engine/runtime/run.py: a hook flag nobody answers is an error naming the hooks dir (issue 12,
item 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_exec.engine.runtime.hookconfig import parse_hook
from hpc_exec.engine.runtime.options import RunOptions
from hpc_exec.engine.runtime.run import _check_flags_answered
from hpc_exec.errors import ConfigError


def _hook(key: str, value: str = "^true$") -> object:
    return parse_hook(Path("/h/10.json"), {"version": "1.0.0", "hook": {"path": "/bin/true"},
                                           "when": {"annotations": {key: value}},
                                           "stages": ["prestart"]})


@pytest.mark.parametrize("flag,attr,key", [
    ("--sync", "sync", "^com.hooks.slurm-global-sync.enabled$"),
    ("--mpi", "mpi", "^com.hooks.mpi.enabled$"),
    ("--glibc", "glibc", "^com.hooks.glibc.enabled$"),
    ("--ssh", "ssh", "^com.hooks.ssh.enabled$"),
])
def test_each_flag_needs_a_selected_hook(flag: str, attr: str, key: str) -> None:
    options = RunOptions(**{attr: True})
    with pytest.raises(ConfigError, match=f"^{flag}: no hook in /site/hooks.d answers it"):
        _check_flags_answered(options, [], Path("/site/hooks.d"))
    with pytest.raises(ConfigError):  # another flag's hook does not answer this one
        _check_flags_answered(options, [_hook("^com.hooks.other$")], Path("/site/hooks.d"))
    _check_flags_answered(options, [_hook(key)], Path("/site/hooks.d"))


def test_mpi_type_is_answered_by_a_type_selected_hook() -> None:
    options = RunOptions(mpi_type="mpich")
    _check_flags_answered(options, [_hook("^com.hooks.mpi.type$", "^mpich$")], Path("/h"))


def test_no_flag_needs_nothing() -> None:
    _check_flags_answered(RunOptions(), [], Path("/h"))
