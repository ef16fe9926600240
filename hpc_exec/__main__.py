"""``python -m hpc_exec`` is ``hpc-exec``."""

from __future__ import annotations

import sys

from hpc_exec.cli import main

sys.exit(main())
