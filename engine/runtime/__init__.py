"""hpc_exec.engine.runtime: the run side (bundle, hooks.d selection, config.json, runc).

The public entry point is :func:`hpc_exec.engine.runtime.api.run` (re-exported as
``hpc_exec.engine.run``); :mod:`run` holds the per-task cycle the CLI uses.
"""

from __future__ import annotations

__all__: list[str] = []
