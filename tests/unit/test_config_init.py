"""hpc-exec config init: which samples are written, which are left out and why (pure part)."""

from __future__ import annotations

import json

from hpc_exec.cli.config import plan_hooks


def _sample(path: str, env: str = "") -> str:
    return json.dumps({"version": "1.0.0", "hook": {"path": path, "args": [path],
                                                    "env": [env] if env else []},
                       "when": {"always": True}, "stages": ["prestart"]})


def test_samples_with_missing_values_or_programs_are_left_out() -> None:
    samples = {
        "01-ok.json": _sample("@PYTHON@", "HOOK_BASE_DIR=@HOOK_BASE_DIR@"),
        "02-no-ofi.json": _sample("@PYTHON@", "P=@OFI_PROVIDER@"),
        "03-optional-deps.json": _sample("@PYTHON@", "D=@MPI_DEPENDENCY_LIBS@"),
        "04-vendor.json": _sample("/usr/bin/vendor-hook"),
        "05-unknown.json": _sample("@PYTHON@", "X=@NOT_A_VALUE@"),
    }
    values = {"PYTHON": "/venv/bin/python", "HOOK_BASE_DIR": "/home", "OFI_PROVIDER": "",
              "MPI_DEPENDENCY_LIBS": ""}
    written, skipped = plan_hooks(samples, values, exists=lambda p: p == "/venv/bin/python")
    assert sorted(written) == ["01-ok.json", "03-optional-deps.json"]
    assert json.loads(written["01-ok.json"])["hook"]["env"] == ["HOOK_BASE_DIR=/home"]
    assert json.loads(written["03-optional-deps.json"])["hook"]["env"] == ["D="]
    assert skipped == {"02-no-ofi.json": "no value for OFI_PROVIDER",
                       "04-vendor.json": "/usr/bin/vendor-hook is not installed",
                       "05-unknown.json": "no value for the placeholder(s) @NOT_A_VALUE@"}


def test_amdgpu_sample_follows_the_hosts_device_unless_forced() -> None:
    samples = {"03-amdgpu-hook.json": _sample("@PYTHON@"), "01-ok.json": _sample("@PYTHON@")}
    values = {"PYTHON": "/venv/bin/python"}
    without_gpu = {"/venv/bin/python"}
    with_gpu = without_gpu | {"/dev/kfd"}

    def plan(present: set[str], amdgpu: str) -> tuple[list[str], dict[str, str]]:
        written, skipped = plan_hooks(samples, values, exists=present.__contains__,
                                      amdgpu=amdgpu)
        return sorted(written), skipped

    assert plan(without_gpu, "auto") == (
        ["01-ok.json"], {"03-amdgpu-hook.json": "no /dev/kfd on this host (--amdgpu yes writes it)"})
    assert plan(with_gpu, "auto") == (["01-ok.json", "03-amdgpu-hook.json"], {})
    assert plan(without_gpu, "yes") == (["01-ok.json", "03-amdgpu-hook.json"], {})
    assert plan(with_gpu, "no") == (["01-ok.json"], {"03-amdgpu-hook.json": "--amdgpu no"})
