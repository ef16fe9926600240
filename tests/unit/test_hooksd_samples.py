"""workflows/hooks.d: every sample, once filled in, is a valid OCI hook 1.0.0 file for the
engine's reader, runs an installed hook, and is selected by the annotation it documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from hpc_exec.engine.runtime.hookconfig import load_hooks, select_hooks
from hpc_exec.hooks import HOOKS, fill_sample, module_path, sample_values

SAMPLES = Path(__file__).resolve().parents[2] / "workflows" / "hooks.d"
SITE = {"HOOK_BASE_DIR": "/scratch/hooks", "MPI_LIBS": "/opt/mpich/lib/libmpi.so.12",
        "MPI_DEPENDENCY_LIBS": "/usr/lib/libfabric.so.1", "GLIBC_LIBS": "/lib/libc.so.6",
        "OFI_PROVIDER": "/opt/ofi/libcxi-fi.so", "OFI_PROVIDER_NAME": "libcxi-fi.so"}


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    values = sample_values(**SITE)
    for sample in sorted(SAMPLES.glob("*.json")):
        (tmp_path / sample.name).write_text(fill_sample(sample.read_text(), values))
    return tmp_path


def test_samples_load_and_point_at_installed_hooks(filled: Path) -> None:
    hooks = load_hooks(filled)
    assert len(hooks) == len(list(SAMPLES.glob("*.json"))) >= 8
    installed = {module_path(name) for name in HOOKS}
    for hook in hooks:
        scripts = [a for a in hook.args if a.endswith(".py")]
        if scripts:  # ours: python -I -S <module file>
            # argv[0] must be the interpreter's absolute path: CPython finds its stdlib from
            # argv[0], and runc gives hooks no PATH (a bare "python3" found /usr/bin/python3's)
            assert hook.args[:3] == (hook.path, "-I", "-S")
            assert scripts[0] in installed
        assert hook.path.startswith("/")


@pytest.mark.parametrize("annotation, expected", [
    ({"com.hooks.slurm-global-sync.enabled": "true"}, "09-slurm-global-sync-hook"),
    ({"com.hooks.mpi.enabled": "true"}, "05-mpi-hook"),
    ({"com.hooks.glibc.enabled": "true"}, "01-glibc-hook"),
    ({"com.hooks.timestamp.enabled": "true"}, "00-timestamp-hook"),
    ({"com.hooks.slurm.activate": "true"}, "06-mount-hook-slurm"),
    ({"com.hooks.ssh.enabled": "true"}, "08-ssh-hook"),
])
def test_annotations_select_their_hook(filled: Path, annotation: dict[str, str],
                                       expected: str) -> None:
    hooks = load_hooks(filled)
    chosen = {h.name for h in select_hooks(hooks, annotations=annotation, argv0="/bin/sh",
                                           has_bind_mounts=False)}
    always = {h.name for h in select_hooks(hooks, annotations={}, argv0="/bin/sh",
                                           has_bind_mounts=False)}
    assert expected in chosen and expected not in always
    assert always == {"02-nvidia-container-toolkit", "03-amdgpu-hook"}


def test_fill_sample_names_missing_values() -> None:
    with pytest.raises(ValueError, match="@HOOK_BASE_DIR@"):
        fill_sample('{"env": ["HOOK_BASE_DIR=@HOOK_BASE_DIR@"], "x": "a@b.c"}', sample_values())
