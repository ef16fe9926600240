#!/usr/bin/env bash
# The test command of the README (and of .ci/run): install what is missing, then run the whole
# suite, unit and integration, against a live testbed that the tests start (and stop again if
# they started it). Extra arguments go to pytest. Run as root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${HPC_EXEC_VENV:-/opt/hpc-exec/venv}

"$repo/scripts/install-deps.sh"
cd "$repo"
# The venv's pytest script, not 'python -m pytest', so the source folders in the checkout never
# shadow the installed package (engine/ and hooks/ are installed under hpc_exec).
export PATH="$venv/bin:$PATH"
exec "$venv/bin/pytest" "$@"
