"""``@container_app(image)``: a command-line app in a fresh container per task.

Built on ``bash_app``: the decorated function returns a command (a string, run by the image's
``/bin/sh -c``, or a list of words, run directly without any shell), and the task runs
``hpc-exec run [binds] IMAGE -- <command>`` on whatever executor gets it. The image needs
neither Python nor parsl. The container's exit status is the task's (``hpc-exec run`` passes it
through), so a failing command raises Parsl's ``BashExitFailure`` with its exit code, and
``stdout=``/``stderr=`` arguments of the function redirect the container's output as they do
for a bash_app. The image is pulled once on the submit host, at the first call, and every task runs the
image as pulled then (``name@digest``), even if its tag moves later.

The tasks' executor must be able to run ``hpc-exec`` (a plain HTEX or a ThreadPoolExecutor,
not one whose workers are themselves in a container).
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any, Literal

from parsl.app.app import bash_app

from hpc_exec import engine
from hpc_exec.errors import InvalidInput
from hpc_exec.parsl import _check
from hpc_exec.parsl._launcher import hpc_exec_program

__all__ = ["ContainerApp", "container_app", "container_command"]

PINNED = "_hpc_exec_image"  # the keyword that carries the pulled image to the task


def container_command(image: str, command: str | Sequence[str], *,
                      binds: Sequence[Any] = (), env: dict[str, str] | None = None,
                      program: Sequence[str] = ("hpc-exec",),
                      run_options: dict[str, Any] | None = None) -> str:
    """The shell line that runs ``command`` in a fresh container of ``image``, with the
    current directory bound at its own path and used as the working directory."""
    if isinstance(command, str):
        if not command.strip():
            raise InvalidInput(f"container_app of {image}: the app returned an empty command")
        words: list[str] = ["/bin/sh", "-c", command]
    else:
        words = [str(w) for w in command]
        if not words:
            raise InvalidInput(f"container_app of {image}: the app returned an empty command")
    cwd = os.getcwd()
    all_binds: list[Any] = [(cwd, cwd)] if cwd != "/" else []
    all_binds += list(binds)
    options = engine.run_options(words, binds=all_binds, env=env,
                                 workdir=cwd if cwd != "/" else None, **(run_options or {}))
    return shlex.join(engine.command_line(image, options, program=program))


class ContainerApp:
    """What ``@container_app`` returns: call it like the bash_app it wraps (it returns the
    task's AppFuture); the first call pulls the image on the submit host."""

    def __init__(self, image: str, app: Any) -> None:
        self.image = image
        self.app = app
        functools.update_wrapper(self, app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pinned = _check.ensure_pulled(self.image)
        return self.app(*args, **{PINNED: pinned}, **kwargs)


def container_app(image: str, *, binds: Sequence[Any] = (), env: dict[str, str] | None = None,
                  run_options: dict[str, Any] | None = None,
                  executors: list[str] | Literal["all"] = "all", cache: bool = False,
                  data_flow_kernel: Any = None, ignore_for_cache: list[str] | None = None
                  ) -> Callable[[Callable[..., Any]], ContainerApp]:
    """Decorate a function returning a command line; see the module docstring.

    ``binds``, ``env`` and ``run_options`` are as for :class:`ContainerLauncher`;
    ``executors``, ``cache``, ``data_flow_kernel`` and ``ignore_for_cache`` go to ``bash_app``.
    """
    if not isinstance(image, str) or not image.strip():
        raise InvalidInput(f"container_app image must be a non-empty string, got {image!r}")
    program = hpc_exec_program()
    binds = tuple(binds)
    engine.run_options(["true"], binds=binds, env=env, **(run_options or {}))  # bad values: now

    def decorator(func: Callable[..., Any]) -> ContainerApp:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> str:
            # runs on the worker, with the task's resolved arguments
            pinned = kwargs.pop(PINNED, image)
            return container_command(pinned, func(*args, **kwargs), binds=binds, env=env,
                                     program=program, run_options=run_options)

        app = bash_app(command, executors=executors, cache=cache,
                       data_flow_kernel=data_flow_kernel, ignore_for_cache=ignore_for_cache)
        return ContainerApp(image, app)

    return decorator
