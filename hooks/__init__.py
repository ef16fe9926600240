"""hpc_exec.hooks: OCI hook programs, standard library only, one module per hook.

Installed from the source folder hooks/ as ``hpc_exec.hooks``. Each hook module has
``main() -> int`` and is installed as the console script ``hpc-hook-<name>``. The cheapest way to
run one (no ``site`` processing, no console-script wrapper) is :func:`command`:
``python3 -I -S <site-packages>/hpc_exec/hooks/<module>.py``; docs/hooks.md has the contract of
each hook. This package must stay cheap to import: hooks import it on every container start.
"""

from __future__ import annotations

import os
import sys

__all__ = ["HOOKS", "command", "fill_sample", "module_path", "sample_values"]

# hook name (hpc-hook-<name>, hooks.d file names) -> module in this package
HOOKS: dict[str, str] = {
    "amdgpu": "amdgpu",
    "glibc": "glibc",
    "mount": "mount",
    "mpi": "mpi",
    "slurm-global-sync": "slurm_global_sync",
    "ssh": "ssh",
    "timestamp": "timestamp",
}


def module_path(name: str) -> str:
    """Absolute path of the installed module file of hook ``name`` (KeyError if unknown)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), HOOKS[name] + ".py")


def command(name: str, python: str | None = None) -> list[str]:
    """argv that runs hook ``name`` fastest: ``python -I -S <module file>``.

    ``-I -S`` skips ``site`` (every ``.pth`` file of the environment) and the console-script
    wrapper, which on a busy node costs more than the hook itself; the module finds its own
    package from its path. This is what hooks.d entries should use as ``path``/``args``.
    """
    return [python or sys.executable, "-I", "-S", module_path(name)]


def sample_values(**overrides: str) -> dict[str, str]:
    """Values for the ``@NAME@`` placeholders of the sample hooks.d files (hooks/samples).

    Defaults: ``PYTHON`` this interpreter, ``HOOKS_DIR`` this package's directory,
    ``PASSWD_FILE`` /etc/passwd, ``LDCONFIG`` /sbin/ldconfig; the site supplies the rest
    (``HOOK_BASE_DIR``, ``MPI_LIBS``, ``MPI_DEPENDENCY_LIBS``, ``GLIBC_LIBS``, ``OFI_PROVIDER``,
    ``OFI_PROVIDER_NAME``), e.g. from ``hpc-exec config init``.
    """
    values = {"PYTHON": sys.executable, "HOOKS_DIR": os.path.dirname(os.path.abspath(__file__)),
              "PASSWD_FILE": "/etc/passwd", "LDCONFIG": "/sbin/ldconfig"}
    values.update(overrides)
    return values


def fill_sample(text: str, values: dict[str, str]) -> str:
    """Replace every ``@NAME@`` in a sample hooks.d file; ValueError naming any left over."""
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted({part for part in text.split("@")[1::2]
                   if part and part.replace("_", "").isalnum() and part.isupper()})
    if left:
        raise ValueError(f"no value for the placeholder(s) {', '.join('@' + k + '@' for k in left)}")
    return text
