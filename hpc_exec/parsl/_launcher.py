"""``ContainerLauncher``: every HTEX worker pool of a block runs inside an OCI image.

A Parsl launcher turns the worker-pool command into the bash text of a block's batch script,
on the submit host. This one wraps the command in the engine's ``hpc-exec run`` command line
(:func:`hpc_exec.engine.command_line`: the run dir and the current directory bound at the same
paths, the caller's uid, the host network) and hands the result to an inner launcher
(``SrunLauncher`` for one pool per node of a multi-node block, ``SingleNodeLauncher``, or any
other), so it works with any provider. At its first call it pulls the image once into the
shared cache and checks it (hpc_exec.parsl._check); a failure there raises, and Parsl marks
the block failed at once with the message.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import typeguard
from parsl.launchers import SrunLauncher
from parsl.launchers.base import Launcher

from hpc_exec import engine, process
from hpc_exec.errors import InvalidInput
from hpc_exec.parsl import _check

__all__ = ["PASSTHROUGH", "ContainerLauncher", "hpc_exec_program"]

log = logging.getLogger(__name__)

# Host variables whose value wins over the image's and the site's in the container (-e NAME).
# The rest of the job's environment reaches the container too (the engine's default), except
# what the image sets (PATH, so that the image's process_worker_pool.py is found).
# CUDA_VISIBLE_DEVICES is left to the engine, which renumbers the granted GPUs from 0.
PASSTHROUGH = ("PARSL_CORES", "PARSL_MEMORY_GB", "SLURM_JOB_ID", "SLURM_JOB_NAME",
               "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES", "SLURM_NODEID", "SLURM_PROCID",
               "SLURM_LOCALID", "SLURM_STEP_ID", "SLURM_CPUS_ON_NODE", "SLURM_NTASKS")

# Characters that the unquoted heredoc of SrunLauncher (and other launchers) would expand or
# eat in our part of the command line.
_HEREDOC_UNSAFE = re.compile(r"[$`\\]")
_NOT_SIMPLE = re.compile(r"[\n;&|<>()`$\\\"']")

# Parsl's own convention (SlurmProvider's launcher=SingleNodeLauncher()); launchers are
# stateless, so one shared default is safe.
DEFAULT_INNER = SrunLauncher()

Bind = str | tuple[str, str] | tuple[str, str, bool]


def hpc_exec_program() -> list[str]:
    """The ``hpc-exec`` to put into jobs: the one next to this Python (same install, on the
    shared filesystem), else the one on PATH."""
    return [process.installed_program("hpc-exec") or "hpc-exec"]


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class ContainerLauncher(Launcher):
    """Run each worker pool of a block in ``image``, started by ``inner``.

    Parameters
    ----------
    image : str
        Image reference (``registry/ns/name:tag``) or a squashfs file. Its ``python3`` must
        have the submit side's Python minor version and exactly its parsl version.
    inner : Launcher
        The launcher that starts the (wrapped) pools: ``SrunLauncher()`` (default, one pool
        per node), ``SingleNodeLauncher()``, ``MpiExecLauncher()``, ...
    binds : sequence of str or tuple
        Extra bind mounts, ``"SRC[:DST][:ro]"`` or ``(src, dst[, readonly])``. The run dir
        and the current directory are bound at their own paths anyway.
    env : dict, optional
        Variables to set in the container.
    run_options : dict, optional
        Further keyword arguments of :func:`hpc_exec.engine.run_options` (``mpi=True``,
        ``devices=[...]``, ``mounts=[...]``, ``home=...``).
    check : bool
        Pull and check the image at the first call (default). False skips the check, not
        the pull.
    check_timeout : float
        Seconds the check container may take.
    """

    @typeguard.typechecked
    def __init__(self, image: str, inner: Launcher = DEFAULT_INNER,
                 binds: Sequence[Bind] = (), env: dict[str, str] | None = None,
                 run_options: dict[str, Any] | None = None, check: bool = True,
                 check_timeout: float = 120.0, debug: bool = True) -> None:
        super().__init__(debug=debug)
        if not image.strip():
            raise InvalidInput(f"ContainerLauncher image must not be empty, got {image!r}")
        if isinstance(inner, ContainerLauncher):
            raise InvalidInput("ContainerLauncher inner launcher must not be another "
                               "ContainerLauncher")
        for key in run_options or {}:
            if key in ("command", "binds", "env", "workdir"):
                raise InvalidInput(f"ContainerLauncher run_options key {key!r} is set by the "
                                   "launcher; use binds= / env= instead")
        self.image = image
        self.inner = inner
        self.binds = tuple(binds)
        self.env = env
        self.run_options = run_options
        self.check = check
        self.check_timeout = check_timeout
        self._lock = threading.Lock()
        self._prepared: dict[tuple[Any, ...], Future[None]] = {}
        self._pinned: str | None = None  # the image as pulled (name@digest), once prepared
        # Fail on bad binds/env/options now, in the user's config, not at the first block.
        self.options("")

    def options(self, script_dir: str) -> Any:
        """The RunOptions of the pools of a block whose submit scripts go to ``script_dir``."""
        binds: list[Bind] = []
        cwd = os.getcwd()
        bound: list[str] = []
        for path in (cwd, str(Path(script_dir).resolve().parent) if script_dir else ""):
            # "/" would hide the image's root; a path under one bound already is there
            if path and path != "/" and not any(_under(path, b) for b in bound):
                bound.append(path)
                binds.append((path, path))
        binds += list(self.binds)
        extra = dict(self.run_options or {})
        passthrough = list(PASSTHROUGH) + list(extra.pop("env_passthrough", ()))
        return engine.run_options(
            (), binds=binds, env=self.env, env_passthrough=passthrough,
            workdir=cwd if cwd != "/" else None, **extra)

    def command_prefix(self, script_dir: str) -> list[str]:
        """``hpc-exec run [options] IMAGE --``: what goes in front of the pool command."""
        argv = engine.command_line(self._pinned or self.image, self.options(script_dir),
                                   program=hpc_exec_program())
        for word in argv:
            if _HEREDOC_UNSAFE.search(word):
                raise InvalidInput(f"ContainerLauncher: {word!r} contains $, ` or \\, which "
                                   "the launcher's batch script would expand")
        return argv

    def prepare(self, script_dir: str = "") -> None:
        """Pull the image once and check it with the pools' options; raise ImageCheckFailed
        if it cannot serve. Memoised: later calls wait for the first and share its answer."""
        options = self.options(script_dir)
        key = (self.image, options)
        with self._lock:
            future = self._prepared.get(key)
            owner = future is None
            if future is None:
                future = self._prepared[key] = Future()
        if owner:
            self._prepare(options, future)
        future.result()

    def prepare_in_background(self, script_dir: str) -> None:
        """Start :meth:`prepare` in a thread (FastSlurmProvider calls this at
        ``parsl.load``, so the check overlaps the interchange's start-up)."""
        options = self.options(script_dir)
        key = (self.image, options)
        with self._lock:
            if key in self._prepared:
                return
            future: Future[None] = Future()
            self._prepared[key] = future
        threading.Thread(target=self._prepare, args=(options, future), daemon=True,
                         name="hpc-exec-image-check").start()

    def _prepare(self, options: Any, future: Future[None]) -> None:
        try:
            pinned = _check.ensure_pulled(self.image)
            if self.check:
                found = _check.probe(pinned, options, self.check_timeout)
                _check.compare(self.image, _check.local_facts(), found)
                log.info("image %s serves parsl %s on Python %s", self.image, found.parsl,
                         found.python)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            future.set_exception(exc)
        else:
            self._pinned = pinned
            future.set_result(None)

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                 script_dir: str = "") -> str:
        self.prepare(script_dir)
        prefix = shlex.join(self.command_prefix(script_dir))
        if _NOT_SIMPLE.search(command):
            wrapped = f"{prefix} /bin/sh -c {shlex.quote(command)}"
        else:
            wrapped = f"{prefix} {command.strip()}"
        return str(self.inner(wrapped, tasks_per_node, nodes_per_block, script_dir))
