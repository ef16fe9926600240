"""Pull an image once per process and check that it can serve Parsl workers.

HTEX's interchange refuses a worker pool whose Python major.minor or parsl version differs
from the submit side's (``VersionMismatch``), after the Slurm job started, and leaves the job
running until the heartbeat runs out. So the submit host checks the image first, in seconds:
one short container runs :data:`PROBE` (no ``import parsl``: it reads ``parsl/version.py``, so
the check costs a container start, not parsl's import time) and the answer is compared here.

:func:`ensure_pulled` and :func:`probe` go through :mod:`hpc_exec.engine` only; the
comparison (:func:`compare`) is pure, so its messages are pinned by unit tests.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

from parsl.providers.errors import ExecutionProviderException

from hpc_exec import engine
from hpc_exec.errors import HpcExecError

__all__ = ["PROBE", "ImageCheckFailed", "ImageFacts", "compare", "ensure_pulled",
           "local_facts", "parse_probe", "probe"]

log = logging.getLogger(__name__)

# Runs in the image with its python3; prints one JSON line. Standard library only.
PROBE = """\
import importlib.util, json, re, shutil, sys
out = {"python": "%d.%d" % sys.version_info[:2], "parsl": None,
       "pool": shutil.which("process_worker_pool.py")}
spec = importlib.util.find_spec("parsl")
if spec is not None and spec.submodule_search_locations:
    for where in spec.submodule_search_locations:
        try:
            text = open(where + "/version.py").read()
        except OSError:
            continue
        m = re.search(r"VERSION\\s*=\\s*['\\"]([^'\\"]+)['\\"]", text)
        out["parsl"] = m.group(1) if m else "unknown"
        break
print(json.dumps(out))
"""


class ImageCheckFailed(HpcExecError, ExecutionProviderException):
    """The image cannot run Parsl workers for this submit side (or could not be pulled).

    A Parsl launcher that raises this fails the block at once: Parsl reports
    ``Failed to start block N: <message>`` instead of a lost allocation. ``str()`` is the
    message plus the fix, on one line, because Parsl shows only ``str()``.
    """

    def __init__(self, image: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.image = image

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class ImageFacts:
    """What matters for HTEX on one side: Python major.minor, parsl version (None: no
    parsl), and where ``process_worker_pool.py`` is (None: not on PATH)."""

    python: str
    parsl: str | None
    pool: str | None = None


def local_facts() -> ImageFacts:
    """The submit side's facts."""
    from parsl.version import VERSION

    return ImageFacts(f"{sys.version_info.major}.{sys.version_info.minor}", VERSION, "")


def parse_probe(image: str, stdout: str) -> ImageFacts:
    """The :data:`PROBE` output (its last JSON line) as facts; ImageCheckFailed if garbled."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("python"), str):
            parsl = data.get("parsl")
            pool = data.get("pool")
            return ImageFacts(data["python"], parsl if isinstance(parsl, str) else None,
                              pool if isinstance(pool, str) else None)
    raise ImageCheckFailed(image, f"the Parsl check of image {image} printed no result: "
                           f"{stdout.strip()[-200:]!r}")


def compare(image: str, local: ImageFacts, found: ImageFacts) -> None:
    """Raise ImageCheckFailed naming both versions and the fix, unless ``found`` can serve
    HTEX workers for ``local``."""
    pin = f"pip install parsl=={local.parsl}"
    if found.python != local.python:
        raise ImageCheckFailed(
            image, f"image {image} runs Python {found.python}, the submit side Python "
            f"{local.python}: HTEX workers need the same Python minor version",
            hint=f"base the image on Python {local.python} and '{pin}' in it, or run the "
                 f"workflow with Python {found.python}")
    if found.parsl is None:
        raise ImageCheckFailed(
            image, f"image {image} has no parsl (Python {found.python}); the submit side "
            f"runs parsl {local.parsl}", hint=f"'{pin}' in the image")
    if found.parsl != local.parsl:
        raise ImageCheckFailed(
            image, f"image {image} has parsl {found.parsl}, the submit side parsl "
            f"{local.parsl}: HTEX workers need exactly the same version",
            hint=f"'{pin}' in the image, or 'pip install parsl=={found.parsl}' here")
    if not found.pool:
        raise ImageCheckFailed(
            image, f"image {image} has parsl {found.parsl} but no process_worker_pool.py "
            "on its PATH", hint="install parsl with pip so that its scripts land on PATH")


_pulled: dict[str, str] = {}  # reference -> pinned reference, for this process
_pull_lock = threading.Lock()


def ensure_pulled(image: str) -> str:
    """Pull ``image`` into the shared cache once per process; return it pinned to what was
    pulled (``server/repository@digest``), so that the jobs run the image that was checked
    even if the tag moves meanwhile (they then fail, naming the digest, instead).

    A squashfs file is used as it is. Pull errors become ImageCheckFailed."""
    if engine.is_squashfs_path(image):
        return image
    with _pull_lock:
        if image not in _pulled:
            try:
                entry = engine.pull(image)
            except HpcExecError as exc:
                raise ImageCheckFailed(image, f"cannot pull image {image}: {exc}",
                                       hint=exc.hint) from exc
            _pulled[image] = entry.pinned
            log.info("pulled %s (%s) for the Parsl workers", image, entry.digest)
        return _pulled[image]


def probe(image: str, options: Any, timeout: float) -> ImageFacts:
    """Run :data:`PROBE` in ``image`` with ``options`` (a RunOptions whose command is
    replaced), so that a mount the workers would get and the site refuses fails here."""
    opts = options._replace(command=("python3", "-c", PROBE))
    try:
        result = engine.run(image, options=opts, capture=True, timeout=timeout)
    except HpcExecError as exc:
        raise ImageCheckFailed(image, f"cannot start the Parsl check in image {image}: {exc}",
                               hint=exc.hint) from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or [""]
        what = "has no python3" if result.returncode == 127 else \
            f"failed (exit {result.returncode}): {tail[0][:300]}"
        raise ImageCheckFailed(image, f"the Parsl check in image {image} {what}",
                               hint="HTEX workers need python3 and parsl in the image")
    return parse_probe(image, result.stdout)
