"""The sbatch script, rendered from one :class:`string.Template` (as Parsl's providers do).

Contract of :func:`render_batch_script`:

* The command is an argv list; it is quoted with :func:`shlex.join`, so no word is ever
  re-split or expanded by the shell. Environment values are quoted the same way; a bad variable
  name raises :class:`~hpc_exec.errors.InvalidInput` naming it.
* ``path_prepend`` directories go first on ``PATH``; everything else in the submitting process's
  environment reaches the job through sbatch's default ``--export=ALL`` (``SLURM_CONF`` too).
* With ``marker_dir``, the script writes the command's exit status to
  ``<marker_dir>/<SLURM_JOB_ID>.exit`` after the command ends, through a temp file and ``mv``, so
  a reader sees either no marker or a complete one. A TERM or INT (the time limit, ``scancel``)
  ends the script *without* a marker: then the state Slurm records (TIMEOUT, CANCELLED) is the
  one that counts, never an exit status of a command that was killed.
* The script exits with the command's status.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence

from hpc_exec.errors import InvalidInput

__all__ = ["BATCH_SCRIPT", "MARKER_SUFFIX", "render_batch_script"]

MARKER_SUFFIX = ".exit"

BATCH_SCRIPT = string.Template("""\
#!/bin/sh
# $description
# Rendered by hpc_exec/slurm/template.py.
trap 'exit 143' TERM
trap 'exit 130' INT
$exports
$command
rc=$$?
$marker
exit "$$rc"
""")

# temp name, then mv: a reader sees no marker or a complete one
_MARKER = string.Template(
    'printf \'%s\\n\' "$$rc" > $dir/".$$SLURM_JOB_ID$suffix.tmp" && '
    'mv -f $dir/".$$SLURM_JOB_ID$suffix.tmp" $dir/"$$SLURM_JOB_ID$suffix"')

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def render_batch_script(
    command: Sequence[str],
    *,
    description: str,
    env: Mapping[str, str] | None = None,
    path_prepend: Sequence[str] = (),
    marker_dir: str | None = None,
) -> str:
    """The text of a batch script that runs ``command`` (module contract)."""
    if not command:
        raise InvalidInput("the batch script needs a command")
    lines = []
    if path_prepend:
        dirs = ":".join(shlex.quote(str(d)) for d in path_prepend)
        lines.append(f'export PATH={dirs}:"$PATH"')
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name):
            raise InvalidInput(f"invalid environment variable name {name!r} for the batch script")
        lines.append(f"export {name}={shlex.quote(str(value))}")
    marker = ""
    if marker_dir is not None:
        marker = _MARKER.substitute(dir=shlex.quote(str(marker_dir)), suffix=MARKER_SUFFIX)
    return BATCH_SCRIPT.substitute(
        description=" ".join(description.split()),  # one comment line, whatever it holds
        exports="\n".join(lines),
        command=shlex.join(str(a) for a in command),
        marker=marker,
    )
