"""hpc_exec.engine.image."""

from __future__ import annotations

__all__: list[str] = []
