"""``hpc-exec config init``: write a working site config and hooks.d from the samples.

What Sarus's ``configure_installation`` does for it: the sample hooks.d files shipped in the
package (``hpc_exec/hooks/samples``, also ``workflows/hooks.d`` in the source tree) get their
``@NAME@`` placeholders filled with this installation's paths (the interpreter, the hooks'
directory) and the site's values, given as options or found on this host:

* ``HOOK_BASE_DIR`` (sync and SSH hooks): ``--hook-base-dir``, default ``/home``, as Sarus;
* ``MPI_LIBS``: ``--mpi-libs``, else the host's MPICH-ABI libraries (``libmpich*.so.12``) in
  the multiarch library directory; ``MPI_DEPENDENCY_LIBS``: ``--mpi-dependency-libs``;
* ``GLIBC_LIBS``: ``--glibc-libs``, else the host's glibc libraries found there;
* ``OFI_PROVIDER``: ``--ofi-provider``; the NVIDIA entry only where its hook program exists;
* the AMD GPU entry (``when: always``) only where ``/dev/kfd`` exists, or with ``--amdgpu yes``:
  on a node without AMD GPUs it would start an interpreter for every container and do nothing.

A sample with a value neither given nor found is left out, and the command says why. Files are
written to a temporary name and renamed; existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "config_init_command", "plan_hooks"]

# what Debian's libc6 installs for the glibc hook to swap (the sonames it compares)
GLIBC_SONAMES = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                 "libresolv.so.2", "libutil.so.1")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "config", help="site configuration (config init)",
        description="Site configuration helpers.")
    csub = p.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    init = csub.add_parser(
        "init", help="write a working config.yaml and hooks.d",
        description="Write DEST/config.yaml and DEST/hooks.d/*.json from the sample hooks with "
        "this installation's paths and the site's values filled in. Samples whose values are "
        "missing are left out (the command says which).")
    init.add_argument("--dest", default="/etc/hpc-exec", help="where to write (default: "
                      "%(default)s)")
    init.add_argument("--hook-base-dir", default="/home",
                      help="HOOK_BASE_DIR of the sync and SSH hooks (default: %(default)s)")
    init.add_argument("--mpi-libs", help="colon-separated host MPI libraries (MPI_LIBS); "
                      "default: the host's libmpich*.so.12")
    init.add_argument("--mpi-dependency-libs", default="",
                      help="colon-separated libraries the MPI libraries need (default: none)")
    init.add_argument("--glibc-libs", help="colon-separated host glibc libraries "
                      "(GLIBC_LIBS); default: the host's")
    init.add_argument("--ofi-provider", help="a libfabric provider library to mount at "
                      "<FI_PROVIDER_PATH> (enables the OFI mount hook)")
    init.add_argument("--amdgpu", choices=("auto", "yes", "no"), default="auto",
                      help="write the AMD GPU hook (runs for every container): auto = where "
                      "/dev/kfd exists on this host (default), e.g. on a GPU node")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=config_init_command)


def _multiarch_dirs() -> list[str]:
    return sorted({*glob.glob("/usr/lib/*-linux-gnu"), *glob.glob("/lib/*-linux-gnu")})


def _found(patterns: list[str]) -> str:
    paths: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if os.path.isfile(real) and all(os.path.basename(p) != os.path.basename(path)
                                            for p in paths):
                paths.append(path)
    return ":".join(paths)


def detect_values() -> dict[str, str]:
    """The host's MPI and glibc libraries (empty when absent)."""
    dirs = _multiarch_dirs()
    return {"MPI_LIBS": _found([f"{d}/libmpich*.so.12" for d in dirs]),
            "GLIBC_LIBS": _found([f"{d}/{name}" for d in dirs for name in GLIBC_SONAMES])}


# samples that act only where a device exists on the node, and run for every container
DEVICE_SAMPLES = {"03-amdgpu-hook.json": "/dev/kfd"}


def plan_hooks(samples: dict[str, str], values: dict[str, str],
               exists: Any = os.path.exists, *, amdgpu: str = "auto"
               ) -> tuple[dict[str, str], dict[str, str]]:
    """(file name -> filled text, file name -> why it was left out), pure but for ``exists``.

    A sample is left out when a placeholder it uses has no value, (NVIDIA) when the hook
    program it names is not installed, or (AMD GPU; ``amdgpu`` "auto") when its device is not
    on this host; ``amdgpu`` "yes"/"no" writes or leaves it out whatever the host has.
    """
    from hpc_exec.hooks import fill_sample

    written: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, text in sorted(samples.items()):
        device = DEVICE_SAMPLES.get(name)
        if device and (amdgpu == "no" or (amdgpu == "auto" and not exists(device))):
            skipped[name] = ("--amdgpu no" if amdgpu == "no" else
                             f"no {device} on this host (--amdgpu yes writes it)")
            continue
        empty = sorted(k for k, v in values.items() if not v and f"@{k}@" in text
                       and k != "MPI_DEPENDENCY_LIBS")
        if empty:
            skipped[name] = f"no value for {', '.join(empty)}"
            continue
        try:
            filled = fill_sample(text, values)
        except ValueError as exc:
            skipped[name] = str(exc)
            continue
        path = json.loads(filled)["hook"]["path"]
        if not exists(path):
            skipped[name] = f"{path} is not installed"
            continue
        written[name] = filled
    return written, skipped


def _write(path: Path, text: str, force: bool) -> bool:
    if path.exists() and not force:
        return False
    from hpc_exec.files import replace_file

    replace_file(path, text)
    return True


def write_hooks_dir(hooks_dir: Path, values: dict[str, str], *, force: bool,
                    amdgpu: str = "auto") -> tuple[list[tuple[Path, bool]], dict[str, str]]:
    """Fill the packaged hook samples with ``values`` (see hooks.sample_values) into
    ``hooks_dir``: ([(file, kept because it existed)], {sample: why it was left out})."""
    import hpc_exec.hooks
    from hpc_exec.hooks import sample_values

    samples_dir = Path(hpc_exec.hooks.__file__).resolve().parent / "samples"
    samples = {p.name: p.read_text() for p in samples_dir.glob("*.json")}
    written, skipped = plan_hooks(samples, sample_values(**values), amdgpu=amdgpu)
    hooks_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    results = [(hooks_dir / name, not _write(hooks_dir / name, text, force))
               for name, text in written.items()]
    return results, skipped


def standard_hook_values(hook_base_dir: str) -> dict[str, str]:
    """The sample values ``config init`` uses by default, found on this host."""
    found = detect_values()
    return dict(HOOK_BASE_DIR=hook_base_dir, MPI_LIBS=found["MPI_LIBS"],
                MPI_DEPENDENCY_LIBS="", GLIBC_LIBS=found["GLIBC_LIBS"], OFI_PROVIDER="",
                OFI_PROVIDER_NAME="")


def config_init_command(args: argparse.Namespace) -> int:
    from hpc_exec.errors import InvalidInput

    dest = Path(args.dest)
    if not dest.is_absolute():
        raise InvalidInput(f"--dest must be an absolute path, got {args.dest!r}")
    for option in ("hook_base_dir", "ofi_provider"):
        value = getattr(args, option)
        if value and not value.startswith("/"):
            raise InvalidInput(f"--{option.replace('_', '-')} must be an absolute path, "
                               f"got {value!r}")
    values = standard_hook_values(args.hook_base_dir)
    values.update(MPI_DEPENDENCY_LIBS=args.mpi_dependency_libs or "",
                  OFI_PROVIDER=args.ofi_provider or "",
                  OFI_PROVIDER_NAME=os.path.basename(args.ofi_provider or ""))
    for key, given in (("MPI_LIBS", args.mpi_libs), ("GLIBC_LIBS", args.glibc_libs)):
        if given is not None:  # given on the command line (even empty) beats detection
            values[key] = given
    hooks_dir = dest / "hooks.d"
    config = (f"# written by hpc-exec config init; every key: docs/configuration.md\n"
              f"securityChecks: true\nhooksDir: {hooks_dir}\n")
    dest.mkdir(parents=True, exist_ok=True)
    results = [(dest / "config.yaml", not _write(dest / "config.yaml", config, args.force))]
    hook_results, skipped = write_hooks_dir(hooks_dir, values, force=args.force,
                                             amdgpu=args.amdgpu)
    out = sys.stdout
    for path, kept in results + hook_results:
        out.write(f"{'kept' if kept else 'wrote'} {path}"
                  f"{' (exists; --force replaces it)' if kept else ''}\n")
    for name, why in skipped.items():
        out.write(f"left out {name}: {why}\n")
    return 0
