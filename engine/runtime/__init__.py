"""hpc_exec.engine.runtime."""

from __future__ import annotations

__all__: list[str] = []
