"""AMD GPU hook: give the container ``/dev/kfd`` and the selected ``/dev/dri`` GPU nodes.

Contract (docs/hooks.md; a ``createContainer`` or ``createRuntime`` hook; no arguments):

* Without ``/dev/kfd`` on the host (no ROCm driver): exit 0 with a DEBUG line.
* ``ROCR_VISIBLE_DEVICES`` in the container env selects GPUs by index (``0,2``): index *i* is
  the *i*-th ``/dev/dri/renderD*`` node in numeric order, together with the ``card*`` node of
  the same device (from ``/sys/class/drm/renderD<N>/device/drm``). Unset or empty: every GPU.
* ``/dev/kfd`` and the selected nodes are bind-mounted at the same paths and whitelisted
  ``rw`` in a cgroup-v1 devices controller when there is one.
* Exit 1 naming the value when an index is not a number or names no GPU.
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks._mount import (
    allow_device,
    bind_device,
    enter_mount_namespace,
    resolve_in_rootfs,
)
from hpc_exec.hooks._state import HookError, Log, exit_now, read_container, run_hook

__all__ = ["gpu_nodes", "main", "select_nodes"]

HOOK = "amdgpu"


def gpu_nodes(dev: str = "/dev", sys_root: str = "/sys") -> list[tuple[str, str | None]]:
    """(render node, card node or None) per GPU, in render-node order."""
    dri = os.path.join(dev, "dri")
    try:
        names = os.listdir(dri)
    except FileNotFoundError:
        return []
    renders = sorted((n for n in names if n.startswith("renderD") and n[7:].isdigit()),
                     key=lambda n: int(n[7:]))
    out: list[tuple[str, str | None]] = []
    for render in renders:
        card = None
        try:
            cards = [n for n in os.listdir(os.path.join(sys_root, "class/drm", render,
                                                        "device/drm"))
                     if n.startswith("card") and n[4:].isdigit()]
            card = os.path.join(dri, cards[0]) if cards else None
        except FileNotFoundError:
            pass
        out.append((os.path.join(dri, render), card))
    return out


def select_nodes(nodes: list[tuple[str, str | None]], visible: str) -> list[str]:
    """The device nodes for ``ROCR_VISIBLE_DEVICES`` = ``visible`` (all when empty)."""
    if not visible.strip():
        chosen = nodes
    else:
        chosen = []
        for item in visible.split(","):
            item = item.strip()
            if not item.isdigit():
                raise HookError(f"ROCR_VISIBLE_DEVICES={visible!r}: {item!r} is not a GPU index "
                                "(UUIDs are not supported)")
            if int(item) >= len(nodes):
                raise HookError(f"ROCR_VISIBLE_DEVICES={visible!r}: there is no GPU {item} "
                                f"(this node has {len(nodes)})")
            chosen.append(nodes[int(item)])
    paths: list[str] = []
    for render, card in chosen:
        paths += [p for p in (card, render) if p and p not in paths]
    return paths


def _run(log: Log) -> int:
    container = read_container()
    if not os.path.exists("/dev/kfd"):
        log.debug("no /dev/kfd on this node (no AMD ROCm driver): nothing to do")
        return 0

    paths = ["/dev/kfd", *select_nodes(gpu_nodes(),
                                       container.env.get("ROCR_VISIBLE_DEVICES", ""))]
    enter_mount_namespace(container.state.pid)
    cgroup_pid = container.state.pid if container.state.pid > 1 else os.getpid()
    for path in paths:
        kind, major, minor = bind_device(path, resolve_in_rootfs(container.rootfs, path), "rw")
        allow_device(cgroup_pid, kind, major, minor, "rw")
        log.debug(f"mounted {path}")
    return 0


def main() -> int:
    """Console script ``hpc-hook-amdgpu``: exit status 0 done or no GPU driver, 1 failed."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
